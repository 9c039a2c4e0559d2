//! Payments in memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tollgate_audit::{AuditEvent, AuditSink};

use super::{Completion, Finished, Ledger, LedgerError};
use crate::payment::Payment;

/// Payments in memory (lost at exit; bounded only by the rate limits).
#[derive(Debug)]
pub(crate) struct MemoryLedger {
    payments: Mutex<HashMap<String, Payment>>,
    by_key: Mutex<HashMap<(String, String), String>>,
    audit: Arc<dyn AuditSink>,
}

impl MemoryLedger {
    pub(crate) fn new(audit: Arc<dyn AuditSink>) -> Self {
        MemoryLedger {
            payments: Mutex::new(HashMap::new()),
            by_key: Mutex::new(HashMap::new()),
            audit,
        }
    }

    async fn record(&self, event: AuditEvent) {
        if let Err(error) = self.audit.record(event).await {
            tracing::warn!(error = %crate::error_chain(&error), "audit event not recorded");
        }
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn insert_pending(
        &self,
        payment: &Payment,
        event: AuditEvent,
    ) -> Result<(), LedgerError> {
        self.record(event).await;
        if let Some(key) = &payment.idempotency_key {
            self.by_key.lock().insert(
                (payment.user_id.clone(), key.clone()),
                payment.transaction_id.clone(),
            );
        }
        self.payments
            .lock()
            .insert(payment.transaction_id.clone(), payment.clone());
        Ok(())
    }

    async fn find(&self, user: &str, transaction_id: &str) -> Result<Option<Payment>, LedgerError> {
        Ok(self
            .payments
            .lock()
            .get(transaction_id)
            .filter(|p| p.user_id == user)
            .cloned())
    }

    async fn find_by_key(
        &self,
        user: &str,
        key: &str,
        within: Duration,
    ) -> Result<Option<Payment>, LedgerError> {
        let id = self
            .by_key
            .lock()
            .get(&(user.to_owned(), key.to_owned()))
            .cloned();
        let found = match id {
            Some(id) => self.find(user, &id).await?,
            None => None,
        };
        let recent = |p: &Payment| p.created_at.elapsed().map_or(true, |age| age < within);
        Ok(found.filter(recent))
    }

    async fn finish(
        &self,
        payment: &Payment,
        _completion: Completion<'_>,
        event: AuditEvent,
    ) -> Result<Finished, LedgerError> {
        // Only the outcome changes: the stored copy takes it in place.
        if let Some(stored) = self.payments.lock().get_mut(&payment.transaction_id) {
            stored.status = payment.status;
            stored.decline_code.clone_from(&payment.decline_code);
        }
        self.record(event).await;
        Ok(Finished::RecordLeftToCaller)
    }

    async fn ping(&self) -> Result<(), LedgerError> {
        Ok(())
    }
}
