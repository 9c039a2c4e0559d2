//! Structured audit events for payment APIs, and the sinks that keep them.
//!
//! - [`AuditEvent`]: id (time-ordered UUIDv7), time, user, [`Action`], [`Outcome`], status,
//!   idempotency key, transaction id, request id, latency and free-form fields. Fields whose names
//!   look like secrets (`authorization`, `api_key`, `token`, card data…) are redacted when set;
//!   API keys never belong in an event.
//! - [`AuditSink`] records and flushes; [`AuditLog`] also answers "this user's trail, newest
//!   first", a page at a time with an opaque cursor (what `GET /api/v1/audit-logs` serves).
//! - Sinks: [`MemoryAuditLog`] (bounded, per user too, so one user's flood never erases
//!   another's trail), [`JsonLinesSink`] (any writer), and with the
//!   `postgres` feature [`postgres::PostgresAuditLog`]: batched writes from a bounded queue
//!   (callers wait when it is full), nothing accepted is lost on flush or shutdown, and events can
//!   be written inside the caller's transaction so a payment and its audit record commit
//!   together.
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use tollgate_audit::{Action, AuditEvent, AuditLog, AuditSink, MemoryAuditLog, Outcome, PageRequest};
//!
//! let log = MemoryAuditLog::new(10_000);
//! for status in [201, 200, 429] {
//!     let outcome = if status == 429 { Outcome::Denied } else { Outcome::Success };
//!     log.record(AuditEvent::new("alice", Action::PAYMENT_ATTEMPT, outcome).status(status)).await?;
//! }
//! log.record(AuditEvent::new("bob", Action::AUTH_FAILED, Outcome::Denied)).await?;
//!
//! let first = log.page("alice", PageRequest::new(Some(2), None)?).await?;
//! assert_eq!(first.entries.iter().map(|e| e.status_code).collect::<Vec<_>>(), [Some(429), Some(200)]);
//! let cursor = first.next_cursor.as_deref();
//! let second = log.page("alice", PageRequest::new(Some(2), cursor)?).await?;
//! assert_eq!(second.entries.len(), 1);
//! assert!(second.next_cursor.is_none());
//! # Ok::<(), tollgate_audit::Error>(())
//! # }).unwrap();
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

mod error;
mod event;
mod json_lines;
mod memory;
mod page;
#[cfg(feature = "postgres")]
pub mod postgres;
mod sink;
pub mod telemetry;

pub use error::{BoxError, Error};
pub use event::{Action, AuditEvent, Outcome};
pub use json_lines::JsonLinesSink;
pub use memory::MemoryAuditLog;
pub use page::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page, PageRequest};
pub use sink::{AuditLog, AuditSink};

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
