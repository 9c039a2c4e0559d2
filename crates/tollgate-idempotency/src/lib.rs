//! Exactly-once payments under retries, duplicates and races: the `Idempotency-Key` crate.
//!
//! **Status: planned (issue #3).** This crate will hold, per `DESIGN.md`:
//! - `Idempotency-Key` parsing (16–255 chars of `[A-Za-z0-9_-]`, bare token or RFC 8941
//!   sf-string) with typed errors that map to `400`;
//! - the scope `(user, method + route, key)` and a blake3 fingerprint of method, route and the
//!   canonical JSON body (same key, different fingerprint → `422`);
//! - the record state machine: absent → in progress (lease + fencing token) → completed, every
//!   transition a compare-and-set on the token, with bounded waiting for in-flight duplicates
//!   (`409` + `Retry-After` past the bound);
//! - the `IdempotencyStore` trait with memory, Redis and PostgreSQL stores, 24 h TTL and batched
//!   cleanup, and a driver that wraps any async handler.
//!
//! Nothing is exported yet except the error type, so that dependants can be written against it.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The crate's error type; variants arrive with the implementation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {}
