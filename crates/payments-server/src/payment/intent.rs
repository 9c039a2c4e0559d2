//! A fresh key's claim written with its pending payment and its `payment_started` event: on
//! PostgreSQL in one statement, so a payment costs two commits — the intent before the charge,
//! the result after. In memory they are written in one step with nothing to yield to in
//! between. Either way no owner can lose its lease between its claim and its intent, which is
//! how a stalled owner and the owner that took over would each record and charge a payment of
//! their own (the protocol's model check finds that interleaving when the two are apart).

use std::sync::Arc;

use tollgate_audit::AuditEvent;
use tollgate_idempotency::Scope;
use tollgate_idempotency::fingerprint::Fingerprint;
use tollgate_idempotency::memory::MemoryStore;
use tollgate_idempotency::store::ClaimOptions;

use super::Payment;
use crate::ledger::{Ledger, MemoryLedger, PostgresLedger};

/// Where a fresh key's claim and its pending payment are written together.
#[derive(Clone, Debug)]
pub(crate) enum IntentStore {
    /// One statement.
    Postgres(Arc<PostgresLedger>),
    /// One step: the memory store's `claim_if_absent`, then the memory ledger's insert.
    Memory {
        store: Arc<MemoryStore>,
        ledger: Arc<MemoryLedger>,
    },
}

impl IntentStore {
    /// Claims `scope` if it has no record, with `payment` and `event`; the claim's fence, or
    /// `None` (nothing written).
    pub(crate) async fn claim_with_pending(
        &self,
        (scope, fingerprint, options): (&Scope, &Fingerprint, ClaimOptions),
        payment: &Payment,
        event: AuditEvent,
    ) -> Result<Option<u64>, tollgate_idempotency::Error> {
        match self {
            IntentStore::Postgres(ledger) => {
                let claim = ledger
                    .idempotency()
                    .claim_params(scope, fingerprint, options);
                ledger
                    .claim_with_pending(&claim, payment, &event)
                    .await
                    // The statement may have committed with its answer lost: like any failed
                    // claim, the record (if written) holds the key until its lease ends, and
                    // the retry then finds the pending payment.
                    .map_err(|error| tollgate_idempotency::Error::store(error, true))
            }
            IntentStore::Memory { store, ledger } => {
                let Some(lease) = store.claim_if_absent(scope, fingerprint, options)? else {
                    return Ok(None);
                };
                // The memory ledger never waits: claim and insert happen in one poll.
                ledger
                    .insert_pending(payment, event)
                    .await
                    .map_err(|error| tollgate_idempotency::Error::store(error, false))?;
                Ok(Some(lease.fence))
            }
        }
    }
}
