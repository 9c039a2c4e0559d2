//! Structured audit events for payment APIs and the sinks that keep them.
//!
//! **Status: planned (issue #4).** This crate will hold, per `DESIGN.md`:
//! - `AuditEvent` (id, time, user, action, outcome, status, idempotency key, transaction id,
//!   request id, latency, structured fields; never a secret);
//! - the `AuditSink` trait with a bounded memory ring, JSON lines, and a PostgreSQL sink
//!   (batched, bounded queue with backpressure, lossless flush and shutdown, cursor-paginated
//!   queries, and writes inside a caller's transaction).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The crate's error type; variants arrive with the implementation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {}
