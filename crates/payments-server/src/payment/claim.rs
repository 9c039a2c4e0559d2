//! The payment's intent written with its claim: a payment whose key was never seen records its
//! idempotency claim, its pending row and its `payment_started` event together. On PostgreSQL
//! they commit in one statement, so a payment costs two commits — the intent before the
//! charge, the result after. In memory they are written in one step with nothing to yield to
//! in between. Either way no owner can lose its lease between its claim and its intent, which
//! is how a stalled owner and the owner that took over would each record and charge a payment
//! of their own (the protocol's model check finds that interleaving when the two are apart).

use std::sync::Arc;
use std::time::Instant;

use tollgate_audit::{Action, AuditEvent, Outcome as AuditOutcome};
use tollgate_http::idempotency::{ClaimFuture, ClaimHook, ClaimRequest, Claimed};
use tollgate_idempotency::Scope;
use tollgate_idempotency::fingerprint::Fingerprint;
use tollgate_idempotency::memory::MemoryStore;
use tollgate_idempotency::store::{ClaimOptions, Lease};
use tollgate_retry::breaker::{CircuitBreaker, State};

use super::{Payment, PaymentRequest};
use crate::auth::Caller;
use crate::layers::request_id;
use crate::ledger::{Ledger, MemoryLedger, PostgresLedger};

/// The pending payment the claim wrote, for the handler (in the request's extensions).
#[derive(Clone, Debug)]
pub(crate) struct Recorded(pub(crate) Arc<Payment>);

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
    async fn claim_with_pending(
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

/// Claims fresh payment keys with the pending row.
#[derive(Debug)]
pub(crate) struct ClaimWithIntent {
    intents: IntentStore,
    breaker: CircuitBreaker,
}

impl ClaimWithIntent {
    pub(crate) fn new(intents: IntentStore, breaker: CircuitBreaker) -> Self {
        ClaimWithIntent { intents, breaker }
    }
}

fn declined() -> ClaimFuture {
    Box::pin(std::future::ready(Ok(None)))
}

impl ClaimHook for ClaimWithIntent {
    /// Declines — the layer claims as usual and the handler answers — when the body is not a
    /// valid payment (nothing is to be recorded) or the breaker is open (it refuses before
    /// anything is recorded).
    fn claim(&self, request: ClaimRequest<'_>) -> ClaimFuture {
        let extensions = request.head.extensions();
        let Some(Caller(user)) = extensions.get::<Caller>() else {
            return declined();
        };
        if self.breaker.state() == State::Open {
            return declined();
        }
        let Ok(parsed) = PaymentRequest::parse(request.body) else {
            return declined();
        };
        let started = Instant::now();
        let key = request.scope.key().as_str();
        let payment = Payment::pending(user, Some(key), parsed);
        let event = AuditEvent::new(
            user.as_ref(),
            Action::PAYMENT_STARTED,
            AuditOutcome::Success,
        )
        .status(202)
        .idempotency_key(key)
        .request_id(request_id::of(extensions))
        .transaction_id(payment.transaction_id.as_str())
        .latency(started.elapsed());
        let intents = self.intents.clone();
        let (scope, fingerprint, options) =
            (request.scope.clone(), *request.fingerprint, request.options);
        Box::pin(async move {
            let fence = intents
                .claim_with_pending((&scope, &fingerprint, options), &payment, event)
                .await?;
            Ok(fence.map(|fence| {
                let mut extensions = http::Extensions::new();
                extensions.insert(Recorded(Arc::new(payment)));
                Claimed {
                    lease: Lease {
                        fence,
                        resumed: false,
                    },
                    extensions,
                }
            }))
        })
    }
}
