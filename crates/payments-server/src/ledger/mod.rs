//! Where payments are kept: one type per backend behind the [`Ledger`] trait. In memory, or in
//! PostgreSQL where a payment's final state, its idempotency completion and its audit event
//! commit in one statement.

mod memory;
mod postgres;
mod sql;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use tollgate_audit::AuditEvent;
use tollgate_idempotency::Scope;
use tollgate_idempotency::store::StoredResponse;

use crate::payment::Payment;

pub(crate) use memory::MemoryLedger;
pub(crate) use postgres::PostgresLedger;
pub(crate) use sql::{MIGRATE, Writes};

pub(crate) use tollgate_backend::BoxError;

/// A ledger failure. Its sources say what the database said (for the log); clients get a fixed
/// message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LedgerError {
    /// The database failed.
    #[error("payment storage failed")]
    Storage(#[source] BoxError),
    /// Another request took over this idempotency key (this one's lease expired): nothing was
    /// written.
    #[error("this request's claim on the idempotency key was taken over; nothing was written")]
    Fenced,
}

impl LedgerError {
    pub(crate) fn storage(error: impl Into<BoxError>) -> Self {
        LedgerError::Storage(error.into())
    }
}

/// The idempotency record to complete with a payment's final state.
#[derive(Debug)]
pub(crate) struct Completion<'a> {
    pub(crate) scope: &'a Scope,
    pub(crate) fence: u64,
    pub(crate) response: &'a StoredResponse,
    pub(crate) ttl: Duration,
}

/// How [`Ledger::finish`] left the idempotency record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finished {
    /// Completed in the same transaction as the payment.
    RecordCompleted,
    /// Not touched: the caller (the idempotency layer) completes it.
    RecordLeftToCaller,
}

/// Payments storage.
#[async_trait]
pub(crate) trait Ledger: Send + Sync + fmt::Debug {
    /// Records a new pending payment (before the processor is called) and `event`, together
    /// where the backend can.
    async fn insert_pending(&self, payment: &Payment, event: AuditEvent)
    -> Result<(), LedgerError>;

    /// `user`'s payment `transaction_id`; another user's payment reads as absent.
    async fn find(&self, user: &str, transaction_id: &str) -> Result<Option<Payment>, LedgerError>;

    /// `user`'s newest payment created with idempotency key `key` in the last `within` (a key
    /// may be used again once its record expired; older payments are another request's).
    async fn find_by_key(
        &self,
        user: &str,
        key: &str,
        within: Duration,
    ) -> Result<Option<Payment>, LedgerError>;

    /// Moves `payment` to its final status and records `event`; where the backend can, completes
    /// `completion` in the same transaction.
    async fn finish(
        &self,
        payment: &Payment,
        completion: Completion<'_>,
        event: AuditEvent,
    ) -> Result<Finished, LedgerError>;

    /// Checks the backend can be reached.
    async fn ping(&self) -> Result<(), LedgerError>;
}
