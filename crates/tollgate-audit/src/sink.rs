//! Where audit events go: [`AuditSink`], and [`AuditLog`] for sinks that can be read back.

use async_trait::async_trait;

use crate::{AuditEvent, Error, Page, PageRequest};

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
