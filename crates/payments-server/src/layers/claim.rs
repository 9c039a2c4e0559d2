//! The idempotency layer's claim hook for payments: a payment whose key was never seen is
//! claimed together with its pending row and `payment_started` event
//! ([`IntentStore`](crate::payment::IntentStore)), and the handler finds that payment in the
//! request's extensions.

use std::sync::Arc;
use std::time::Instant;

use tollgate_http::idempotency::{ClaimFuture, ClaimHook, ClaimRequest, Claimed};
use tollgate_idempotency::store::Lease;
use tollgate_retry::breaker::{CircuitBreaker, State};

use super::request_id;
use crate::auth::Caller;
use crate::payment::{IntentStore, Payment, PaymentRequest};

/// The pending payment the claim wrote, for the handler (in the request's extensions).
#[derive(Clone, Debug)]
pub(crate) struct ClaimedPayment(pub(crate) Arc<Payment>);

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
        let Some(Caller { user, .. }) = extensions.get::<Caller>() else {
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
        let event = payment.started_event(key, request_id::of(extensions), started.elapsed());
        let intents = self.intents.clone();
        let (scope, fingerprint, options) =
            (request.scope.clone(), *request.fingerprint, request.options);
        Box::pin(async move {
            let fence = intents
                .claim_with_pending((&scope, &fingerprint, options), &payment, event)
                .await?;
            Ok(fence.map(|fence| {
                let mut extensions = http::Extensions::new();
                extensions.insert(ClaimedPayment(Arc::new(payment)));
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
