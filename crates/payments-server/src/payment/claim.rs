//! The payment's intent written with its claim: on PostgreSQL, a payment whose key was never
//! seen commits its idempotency claim, its pending row and its `payment_started` event in one
//! statement, so a payment costs two commits — the intent before the charge, the result after.

use std::sync::Arc;
use std::time::Instant;

use tollgate_audit::{Action, AuditEvent, Outcome as AuditOutcome};
use tollgate_http::idempotency::{ClaimFuture, ClaimHook, ClaimRequest, Claimed};
use tollgate_idempotency::store::Lease;
use tollgate_retry::breaker::{CircuitBreaker, State};

use super::{Payment, PaymentRequest};
use crate::auth::Caller;
use crate::layers::request_id;
use crate::ledger::PostgresLedger;

/// The pending payment the claim wrote, for the handler (in the request's extensions).
#[derive(Clone, Debug)]
pub(crate) struct Recorded(pub(crate) Arc<Payment>);

/// Claims fresh payment keys with the pending row.
#[derive(Debug)]
pub(crate) struct ClaimWithIntent {
    ledger: Arc<PostgresLedger>,
    breaker: CircuitBreaker,
}

impl ClaimWithIntent {
    pub(crate) fn new(ledger: Arc<PostgresLedger>, breaker: CircuitBreaker) -> Self {
        ClaimWithIntent { ledger, breaker }
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
        let ledger = Arc::clone(&self.ledger);
        let (scope, fingerprint, options) =
            (request.scope.clone(), *request.fingerprint, request.options);
        Box::pin(async move {
            let claim = ledger
                .idempotency()
                .claim_params(&scope, &fingerprint, options);
            let fence = ledger
                .claim_with_pending(&claim, &payment, &event)
                .await
                // The statement may have committed with its answer lost: like any failed
                // claim, the record (if written) holds the key until its lease ends, and the
                // retry then finds the pending payment.
                .map_err(|error| tollgate_idempotency::Error::store(error, true))?;
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
