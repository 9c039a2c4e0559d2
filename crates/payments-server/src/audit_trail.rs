//! [`AuditTrail`]: the audit log as the server writes it, with refusals folded per window.

use std::sync::Arc;

use prometheus::IntCounter;
use tollgate_audit::{AuditEvent, AuditLog};

use crate::refusals::{Denial, RefusalDigest};

/// The audit log and the refusal digest in front of it; cheap to clone (it is shared).
#[derive(Clone, Debug)]
pub(crate) struct AuditTrail {
    pub(crate) log: Arc<dyn AuditLog>,
    pub(crate) refusals: Arc<RefusalDigest>,
    /// `audit_refusals_folded_total`.
    folded: IntCounter,
}

impl AuditTrail {
    pub(crate) fn new(log: Arc<dyn AuditLog>, refusals: RefusalDigest, folded: IntCounter) -> Self {
        AuditTrail {
            log,
            refusals: Arc::new(refusals),
            folded,
        }
    }

    /// Hands `event` to the audit log before the client is answered: once accepted, the
    /// PostgreSQL sink writes it even if the server shuts down right after (its queue is
    /// flushed at shutdown). Accepting is a queue push; it waits only when the queue is full,
    /// which is the backpressure wanted.
    pub(crate) async fn record(&self, event: AuditEvent) {
        if let Err(error) = self.log.record(event).await {
            tracing::warn!(error = %crate::error_chain(&error), "audit event not recorded");
        }
    }

    /// [`record`](Self::record) for each of `events`, in order.
    pub(crate) async fn record_all(&self, events: Vec<AuditEvent>) {
        for event in events {
            self.record(event).await;
        }
    }

    /// The entries to write for one refusal, folded per window (see [`RefusalDigest`]): the
    /// previous window's count if it just ended, and `event()`, the refusal's own entry, only
    /// when it opens a window. Empty (and nothing built) when it is folded.
    pub(crate) fn refusal_entries(
        &self,
        denial: &Denial<'_>,
        event: impl FnOnce() -> AuditEvent,
    ) -> Vec<AuditEvent> {
        let admitted = self.refusals.admit(denial);
        if !admitted.opened {
            self.folded.inc();
        }
        let own = admitted.opened.then(event);
        admitted.summary.into_iter().chain(own).collect()
    }
}
