//! Structured audit events for payment APIs, and the sinks that keep them.
//!
//! - [`AuditEvent`]: id (time-ordered UUIDv7), time, user, [`Action`], [`Outcome`], status,
//!   idempotency key, transaction id, request id, latency and free-form fields. Fields whose names
//!   look like secrets (`authorization`, `api_key`, `token`, card data…) are redacted when set;
//!   API keys never belong in an event.
//! - [`AuditSink`] records and flushes; [`AuditLog`] also answers "this user's trail, newest
//!   first", a page at a time with an opaque cursor (what `GET /api/v1/audit-logs` serves).
//! - Sinks: [`MemoryAuditLog`] (bounded ring), [`JsonLinesSink`] (any writer), and with the
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
#![deny(missing_docs)]

mod event;
mod json_lines;
mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;

use async_trait::async_trait;
use uuid::Uuid;

pub use event::{Action, AuditEvent, Outcome};
pub use json_lines::JsonLinesSink;
pub use memory::MemoryAuditLog;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The page request is invalid (limit out of range, malformed cursor).
    #[error("invalid page request: {0}")]
    InvalidPage(String),
    /// The sink could not write (I/O, serialization).
    #[error("audit sink error: {0}")]
    Sink(String),
    /// The database failed; `transient` says whether retrying may help.
    #[error("audit database error: {message}")]
    Database {
        /// What failed.
        message: String,
        /// Whether a retry may succeed (connection loss, timeout).
        transient: bool,
    },
    /// The sink was shut down and accepts nothing more.
    #[error("audit sink is shut down")]
    Closed,
    /// Shutdown gave up with accepted events still unwritten (the database stayed unreachable).
    #[error("{0} accepted audit events could not be written before the shutdown deadline")]
    Unwritten(u64),
}

impl Error {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Database {
                transient: true,
                ..
            }
        )
    }
}

/// Somewhere audit events go.
#[async_trait]
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    /// Accepts an event. Once this returns `Ok`, the event is not lost by a later
    /// [`flush`](Self::flush) or graceful shutdown.
    async fn record(&self, event: AuditEvent) -> Result<(), Error>;

    /// Returns once every event accepted before the call is durably written.
    async fn flush(&self) -> Result<(), Error>;
}

/// A sink that can also be read back, per user, newest first.
#[async_trait]
pub trait AuditLog: AuditSink {
    /// One page of `user_id`'s events, newest first.
    async fn page(&self, user_id: &str, request: PageRequest) -> Result<Page, Error>;
}

/// The most entries one page may ask for.
pub const MAX_PAGE_SIZE: usize = 100;
/// The page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: usize = 20;

/// Which page to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    limit: usize,
    before: Option<Uuid>,
}

impl PageRequest {
    /// `limit` entries (1–100, default 20) older than `cursor` (a page's `next_cursor`, or none
    /// for the newest).
    pub fn new(limit: Option<usize>, cursor: Option<&str>) -> Result<Self, Error> {
        let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(Error::InvalidPage(format!(
                "limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}"
            )));
        }
        let before = cursor
            .map(|c| {
                Uuid::parse_str(c)
                    .map_err(|_| Error::InvalidPage(format!("malformed cursor {c:?}")))
            })
            .transpose()?;
        Ok(PageRequest { limit, before })
    }

    /// Entries per page.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Only entries with an id below this one (the decoded cursor).
    pub fn before(&self) -> Option<Uuid> {
        self.before
    }
}

/// One page of a user's audit trail.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Page {
    /// Newest first.
    pub entries: Vec<AuditEvent>,
    /// Pass to [`PageRequest::new`] for the next (older) page; `None` on the last page.
    pub next_cursor: Option<String>,
}

impl Page {
    /// Builds a page from up to `limit + 1` entries fetched newest first: the extra one only
    /// tells that another page exists.
    pub fn from_overfetch(mut entries: Vec<AuditEvent>, limit: usize) -> Self {
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_cursor = more
            .then(|| entries.last().map(|e| e.id.to_string()))
            .flatten();
        Page {
            entries,
            next_cursor,
        }
    }
}
