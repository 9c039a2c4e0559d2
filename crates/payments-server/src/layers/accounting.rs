//! What happened to each payment request, counted in `/metrics` and written to the audit trail,
//! from the typed facts the layers and the handler publish in the response's extensions:
//! `RateLimited`, `IdempotencyOutcome`, the server's own [`Refusal`] and [`PaymentAnswered`].
//! Nothing is read back from headers or guessed from a status code.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use tollgate_audit::{Action, AuditEvent, Outcome as AuditOutcome};
use tollgate_http::idempotency::IdempotencyOutcome;
use tollgate_http::ratelimit::RateLimited;
use tollgate_idempotency::IdempotencyKey;
use tower_http::request_id::RequestId;

use super::Refusal;
use super::stage::{After, Around};
use crate::audit_trail::AuditTrail;
use crate::auth::Caller;
use crate::metrics::{Metrics, PaymentOutcome};
use crate::refusals::Denial;

/// Put by the payment handler in its answer's extensions: how it counts in
/// `payment_requests_total`. The handler wrote its own audit events (some commit with the
/// payment), so accounting writes none for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PaymentAnswered {
    /// The `outcome` label.
    pub(crate) label: PaymentOutcome,
    /// `Some(succeeded)` when the processor settled the payment (for `payment_success_rate`).
    pub(crate) settled: Option<bool>,
}

/// How a payment request counts, and the audit entry to write for it, if any; a refusal's
/// `detail` (the rate limit's policy) says what it is folded with.
struct Verdict {
    label: PaymentOutcome,
    audit: Option<(Action, AuditOutcome)>,
    detail: Option<String>,
}

fn verdict(label: PaymentOutcome, action: Action, outcome: AuditOutcome) -> Verdict {
    Verdict {
        label,
        audit: Some((action, outcome)),
        detail: None,
    }
}

/// The one place that decides how a payment request counts.
fn classify(metrics: &Metrics, response: &Response) -> Option<Verdict> {
    let facts = response.extensions();
    if let Some(limited) = facts.get::<RateLimited>() {
        metrics
            .rate_limit_exceeded
            .with_label_values(&[limited.policy.as_str()])
            .inc();
        return Some(Verdict {
            detail: Some(limited.policy.clone()),
            ..verdict(
                PaymentOutcome::RateLimited,
                Action::RATE_LIMITED,
                AuditOutcome::Denied,
            )
        });
    }
    let denied = AuditOutcome::Denied;
    let outcome = facts.get::<IdempotencyOutcome>();
    if let Some(outcome) = outcome {
        metrics
            .backends
            .idempotency_requests
            .with_label_values(&[outcome_label(*outcome)])
            .inc();
    }
    Some(match outcome {
        Some(IdempotencyOutcome::Executed) => {
            let answered = facts.get::<PaymentAnswered>()?;
            if let Some(succeeded) = answered.settled {
                metrics.processed(succeeded);
            }
            Verdict {
                label: answered.label,
                audit: None,
                detail: None,
            }
        }
        Some(IdempotencyOutcome::Replayed) => {
            metrics.idempotent_replays.inc();
            verdict(
                PaymentOutcome::Replayed,
                Action::PAYMENT_REPLAY,
                AuditOutcome::Success,
            )
        }
        Some(IdempotencyOutcome::Conflict | IdempotencyOutcome::Fenced) => {
            metrics.concurrent_conflicts.inc();
            verdict(
                PaymentOutcome::Conflicted,
                Action::IDEMPOTENCY_CONFLICT,
                denied,
            )
        }
        Some(IdempotencyOutcome::Mismatch) => verdict(
            PaymentOutcome::Rejected,
            Action::IDEMPOTENCY_MISMATCH,
            denied,
        ),
        Some(IdempotencyOutcome::StoreFailed) => {
            verdict(PaymentOutcome::Unavailable, Action::PAYMENT_ATTEMPT, denied)
        }
        Some(_) => verdict(PaymentOutcome::Rejected, Action::VALIDATION_FAILED, denied),
        None => match facts.get::<Refusal>()? {
            Refusal::UnsupportedMediaType => {
                verdict(PaymentOutcome::Rejected, Action::VALIDATION_FAILED, denied)
            }
            Refusal::DeadlineExceeded => {
                verdict(PaymentOutcome::Unavailable, Action::PAYMENT_ATTEMPT, denied)
            }
        },
    })
}

/// `idempotency_requests_total`'s label for `outcome`, one of
/// [`IDEMPOTENCY_OUTCOMES`](crate::metrics::IDEMPOTENCY_OUTCOMES).
fn outcome_label(outcome: IdempotencyOutcome) -> &'static str {
    match outcome {
        IdempotencyOutcome::Executed => "executed",
        IdempotencyOutcome::Replayed => "replayed",
        IdempotencyOutcome::Conflict => "conflict",
        IdempotencyOutcome::Mismatch => "mismatch",
        IdempotencyOutcome::Fenced => "fenced",
        IdempotencyOutcome::InvalidKey => "invalid_key",
        IdempotencyOutcome::InvalidBody => "invalid_body",
        IdempotencyOutcome::BodyTooLarge => "body_too_large",
        IdempotencyOutcome::StoreFailed => "store_failed",
        _ => "other",
    }
}

/// Counts and audits what the stack answered to an authenticated payment request.
#[derive(Debug)]
pub(crate) struct Accounting {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) audit: AuditTrail,
}

/// What [`Accounting`] keeps from the request: the caller, the request id and the raw
/// `Idempotency-Key` (parsed only if an entry is written: most answers write none).
pub(crate) struct Noted {
    user: Option<Caller>,
    request_id: Option<RequestId>,
    key: Option<http::HeaderValue>,
}

impl Around for Accounting {
    type Noted = Noted;

    fn before(&self, request: &Request) -> Noted {
        Noted {
            user: request.extensions().get::<Caller>().cloned(),
            request_id: request.extensions().get::<RequestId>().cloned(),
            key: single_key(request.headers()),
        }
    }

    fn after(&self, noted: Noted, response: Response) -> After {
        let (Some(Caller { user, .. }), Some(verdict)) =
            (noted.user, classify(&self.metrics, &response))
        else {
            return After::Now(response);
        };
        self.metrics
            .payment_requests
            .with_label_values(&[verdict.label.label()])
            .inc();
        let Some((action, outcome)) = verdict.audit else {
            return After::Now(response);
        };
        let key = noted.key.as_ref().and_then(|raw| raw.to_str().ok());
        let key = key.and_then(|raw| IdempotencyKey::parse(raw).ok());
        let request_id = noted.request_id.as_ref();
        let request_id = request_id.and_then(|id| id.header_value().to_str().ok());
        let (status, request_id) = (response.status().as_u16(), request_id.unwrap_or_default());
        let event = || {
            let event = AuditEvent::new(user.as_ref(), action.clone(), outcome)
                .status(status)
                .request_id(request_id);
            match &key {
                Some(key) => event.idempotency_key(key.as_str()),
                None => event,
            }
        };
        let entries = if outcome == AuditOutcome::Denied {
            let denial = Denial {
                user: &user,
                action: &action,
                detail: verdict.detail.as_deref(),
                status: Some(status),
                request_id: Some(request_id),
                idempotency_key: key.as_ref().map(IdempotencyKey::as_str),
            };
            self.audit.refusal_entries(&denial, event)
        } else {
            vec![event()]
        };
        if entries.is_empty() {
            return After::Now(response);
        }
        let audit = self.audit.clone();
        After::Later(Box::pin(async move {
            audit.record_all(entries).await;
            response
        }))
    }
}

const IDEMPOTENCY_KEY: http::HeaderName =
    http::HeaderName::from_static(tollgate_idempotency::key::HEADER);

/// The request's `Idempotency-Key` value, if it has exactly one.
fn single_key(headers: &http::HeaderMap) -> Option<http::HeaderValue> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let first = values.next()?;
    values.next().is_none().then(|| first.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every label the layer writes is one of those that exist from the first scrape.
    #[test]
    fn idempotency_outcome_labels_are_the_ones_made_at_start() {
        let outcomes = [
            IdempotencyOutcome::Executed,
            IdempotencyOutcome::Replayed,
            IdempotencyOutcome::Conflict,
            IdempotencyOutcome::Mismatch,
            IdempotencyOutcome::Fenced,
            IdempotencyOutcome::InvalidKey,
            IdempotencyOutcome::InvalidBody,
            IdempotencyOutcome::BodyTooLarge,
            IdempotencyOutcome::StoreFailed,
        ];
        for outcome in outcomes {
            let label = outcome_label(outcome);
            assert!(
                crate::metrics::IDEMPOTENCY_OUTCOMES.contains(&label),
                "{label}"
            );
        }
    }
}
