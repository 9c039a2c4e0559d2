//! `POST /api/v1/payments` (inside the idempotency layer: this request owns its key) and
//! `GET /api/v1/payments/{transaction_id}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderValue, LOCATION};
use tollgate_audit::{Action, AuditEvent, Outcome as AuditOutcome};
use tollgate_http::idempotency::{Disposition, kept_headers};
use tollgate_http::problem::Problem;
use tollgate_idempotency::Scope;
use tollgate_idempotency::store::{Lease, StoredResponse};

use crate::auth::Caller;
use crate::layers::accounting::PaymentAnswered;
use crate::layers::claim::ClaimedPayment;
use crate::layers::{body, request_id};
use crate::ledger::LedgerError;
use crate::metrics::PaymentOutcome;
use crate::payment::{Attempt, Payment, Refused, Settled, Status};
use crate::state::AppState;
use crate::{paths, responses};

/// What the adapter makes of the flow's result.
struct Answer {
    response: Response,
    disposition: Disposition,
    label: PaymentOutcome,
    /// An audit event the flow did not already write with the payment.
    audit: Option<AuditEvent>,
}

pub(crate) async fn create_payment(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    // Taken out of the request, the claim's payment is this handler's alone: no copy of it.
    let recorded = parts
        .extensions
        .remove::<ClaimedPayment>()
        .map(|recorded| Arc::unwrap_or_clone(recorded.0));
    let extensions = &parts.extensions;
    let (Some(&lease), Some(scope), Some(Caller { user, .. })) = (
        extensions.get::<Lease>(),
        extensions.get::<Scope>(),
        extensions.get::<Caller>(),
    ) else {
        return responses::simple(StatusCode::INTERNAL_SERVER_ERROR, "payment without a lease");
    };
    // In memory already: the body layer and the idempotency layer read it.
    let body = axum::body::to_bytes(body, body::LIMIT)
        .await
        .unwrap_or_default();
    let traceparent = crate::trace::child_traceparent(&parts.headers);
    let attempt = Attempt {
        user,
        request_id: request_id::of(extensions),
        scope,
        lease,
        body: &body,
        started: Instant::now(),
        traceparent: traceparent.as_deref(),
    };
    let outcome = state.payments.pay(&attempt, recorded, receipt).await;
    let settled = outcome
        .as_ref()
        .ok()
        .map(|s| s.payment.status == Status::Succeeded);
    let answer = answer(outcome, &attempt);
    match answer.audit {
        Some(event) if event.outcome == AuditOutcome::Denied => {
            let denial = crate::refusals::Denial::of(&event, user, None);
            let entries = state.audit.refusal_entries(&denial, || event.clone());
            state.audit.record_all(entries).await;
        }
        Some(event) => state.audit.record(event).await,
        None => {}
    }
    let mut response = answer.response;
    response.extensions_mut().insert(answer.disposition);
    response.extensions_mut().insert(PaymentAnswered {
        label: answer.label,
        settled,
    });
    response
}

/// The flow's result as an answer, what the idempotency layer keeps of it, how it counts and
/// what the trail says.
fn answer(outcome: Result<Settled, Refused>, attempt: &Attempt<'_>) -> Answer {
    match outcome {
        Ok(settled) => settled_answer(settled),
        Err(refused) => refusal(refused, attempt),
    }
}

impl Answer {
    /// An answer the flow's own writes already audited.
    fn unaudited(response: Response, disposition: Disposition, label: PaymentOutcome) -> Self {
        Answer {
            response,
            disposition,
            label,
            audit: None,
        }
    }
}

/// A payment the processor settled: its receipt, stored for replays.
fn settled_answer(settled: Settled) -> Answer {
    let disposition = if settled.record_completed {
        Disposition::Completed
    } else {
        Disposition::Store
    };
    let label = match settled.payment.status {
        Status::Succeeded => PaymentOutcome::Succeeded,
        _ => PaymentOutcome::Declined,
    };
    Answer::unaudited(live(settled.receipt), disposition, label)
}

/// A payment the flow did not settle: refused before the charge, or left pending.
fn refusal(refused: Refused, attempt: &Attempt<'_>) -> Answer {
    let invalid = |response: Response| Answer {
        audit: Some(attempt.event(
            Action::VALIDATION_FAILED,
            AuditOutcome::Denied,
            response.status().as_u16(),
        )),
        ..Answer::unaudited(response, Disposition::Forget, PaymentOutcome::Rejected)
    };
    match refused {
        Refused::Malformed(message) => invalid(responses::simple(
            StatusCode::BAD_REQUEST,
            format!("the body is not a payment request: {message}"),
        )),
        Refused::Invalid(errors) => invalid(responses::invalid_payment(&errors)),
        error @ Refused::CircuitOpen { retry_after } => Answer::unaudited(
            responses::with_retry_after(
                responses::simple(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
                retry_after,
            ),
            Disposition::Forget,
            PaymentOutcome::Unavailable,
        ),
        Refused::CircuitOpenPending {
            payment,
            retry_after,
        } => still_pending(&payment, Pending::CircuitOpen(retry_after), attempt),
        Refused::Storage(error) => storage_failed(&error),
        Refused::ProcessorLost { payment, cause } => {
            let reason = crate::error_chain(&cause);
            still_pending(&payment, Pending::AnswerLost(reason), attempt)
        }
        // A newer owner holds the key and will reconcile this same payment. Giving the key back
        // with this stale fence is refused like any fenced-off write, so the idempotency layer
        // answers 409 with Retry-After and says so (`IdempotencyOutcome::Fenced`).
        error @ Refused::TakenOver => Answer::unaudited(
            responses::simple(StatusCode::CONFLICT, error.to_string()),
            Disposition::Ambiguous,
            PaymentOutcome::Conflicted,
        ),
    }
}

/// The payment's storage failed: the write may have committed with its acknowledgement lost,
/// so the key is kept and a retry looks the payment up rather than recording it twice.
fn storage_failed(error: &LedgerError) -> Answer {
    // The database's own message stays in the log: it can name hosts and schemas.
    let error = crate::pools::explained(crate::error_chain(error));
    tracing::warn!(%error, "payment storage failed");
    Answer::unaudited(
        responses::unavailable(
            "payment storage is unavailable; retry with the same Idempotency-Key",
        ),
        Disposition::Ambiguous,
        PaymentOutcome::Unavailable,
    )
}

/// The answer for a settled payment, rendered once: these bytes are stored and sent.
fn receipt(payment: &Payment) -> StoredResponse {
    let location = paths::payment_location(&payment.transaction_id);
    let mut response = if payment.status == Status::Failed {
        Problem::new(StatusCode::PAYMENT_REQUIRED, "Payment declined")
            .detail("the payment processor declined the payment")
            .extension("transaction_id", payment.transaction_id.as_str())
            .extension(
                "decline_code",
                payment.decline_code.clone().unwrap_or_default(),
            )
            .extension("payment", payment.to_json())
            .into_response()
    } else {
        let body = serde_json::to_vec(&payment.view()).unwrap_or_default();
        let mut response = http::Response::new(Bytes::from(body));
        *response.status_mut() = StatusCode::CREATED;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    };
    if let Ok(value) = HeaderValue::try_from(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    StoredResponse {
        status: response.status().as_u16(),
        headers: kept_headers(response.headers()),
        body: response.into_body(),
    }
}

/// A stored receipt as a live answer.
fn live(receipt: StoredResponse) -> Response {
    let mut response = Response::new(Body::from(receipt.body));
    *response.status_mut() =
        StatusCode::from_u16(receipt.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in receipt.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(name),
            HeaderValue::try_from(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Why a recorded payment is still pending.
enum Pending {
    /// The processor's answer is unknown.
    AnswerLost(String),
    /// The breaker opened after the payment was recorded: nothing was charged.
    CircuitOpen(Duration),
}

/// The answer for a payment left pending: the claim is kept (ambiguous), so the retry with the
/// same key resumes this payment and reconciles it with the processor.
fn still_pending(payment: &Payment, why: Pending, attempt: &Attempt<'_>) -> Answer {
    let (reason, status, title, detail, retry_after, label) = match why {
        Pending::AnswerLost(reason) => (
            reason.clone(),
            StatusCode::BAD_GATEWAY,
            "Payment processor error",
            format!(
                "{reason}; the payment is pending: retry with the same Idempotency-Key to learn its outcome (it is never charged twice)"
            ),
            None,
            PaymentOutcome::Failed,
        ),
        Pending::CircuitOpen(retry_after) => (
            "circuit open".to_owned(),
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
            "the payment processor is unavailable (circuit open); the payment is pending and nothing was charged: retry with the same Idempotency-Key to complete it".to_owned(),
            Some(retry_after),
            PaymentOutcome::Unavailable,
        ),
    };
    let event = attempt
        .event(
            Action::PAYMENT_ATTEMPT,
            AuditOutcome::Failure,
            status.as_u16(),
        )
        .transaction_id(payment.transaction_id.as_str())
        .field("error", reason);
    let mut response = responses::respond(
        Problem::new(status, title)
            .detail(detail)
            .extension("transaction_id", payment.transaction_id.as_str()),
    );
    if let Some(after) = retry_after {
        response = responses::with_retry_after(response, after);
    }
    Answer {
        audit: Some(event),
        ..Answer::unaudited(response, Disposition::Ambiguous, label)
    }
}

pub(crate) async fn get_payment(
    State(state): State<Arc<AppState>>,
    Extension(Caller { user, .. }): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let Path(id) = match id {
        Ok(id) => id,
        Err(rejection) => return responses::simple(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    match state.payments.ledger.find(&user, &id).await {
        Ok(Some(payment)) => responses::json(StatusCode::OK, &payment.view()),
        // Someone else's payment is indistinguishable from no payment.
        Ok(None) => responses::simple(
            StatusCode::NOT_FOUND,
            format!("no payment {id:?} for this user"),
        ),
        Err(error) => {
            let error = crate::pools::explained(crate::error_chain(&error));
            tracing::warn!(%error, "payment storage failed");
            responses::with_retry_after(
                responses::simple(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "payment storage is unavailable",
                ),
                Duration::from_secs(1),
            )
        }
    }
}
