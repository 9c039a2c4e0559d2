//! The processor's API: charge, find a charge, count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::handler::Handler;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post_service};
use axum::{Json, Router};
use http::StatusCode;
use http::header::{HeaderValue, RETRY_AFTER};
use serde::Deserialize;
use serde_json::json;
use tollgate_http::idempotency::{Disposition, IdempotencyLayer, Identity};
use tollgate_http::problem::Problem;
use tollgate_http::{RequestHead, error_chain};
use tollgate_idempotency::store::IdempotencyStore;
use tollgate_idempotency::{Idempotency, Scope};
use tower::ServiceBuilder;

use crate::charges::{Charge, ChargeBook};
use crate::faults::{Before, Faults};

/// The payment method that is always declined.
pub(crate) const TEST_DECLINE: &str = "test_decline";

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct Processor {
    pub(crate) book: Arc<dyn ChargeBook>,
    pub(crate) faults: Faults,
    /// Requests received on `/v1/charges…`, answered or not.
    pub(crate) requests: AtomicU64,
}

/// Put in a response's extensions: the connection is closed instead of sending it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LoseAnswer;

/// `POST /v1/charges` (idempotent per `Idempotency-Key`), `GET /v1/charges/{reference}`,
/// `GET /v1/stats`.
pub(crate) fn router<St: IdempotencyStore + 'static>(
    processor: Arc<Processor>,
    idempotency: Arc<Idempotency<St>>,
) -> Router {
    // Keys come from one caller, the payments server: one scope for every request.
    let scope = |_: &RequestHead<'_>| Some(Identity::new("processor", "/v1/charges"));
    let charge = ServiceBuilder::new()
        .map_response(IntoResponse::into_response)
        .layer(
            IdempotencyLayer::new(idempotency, scope)
                .key_policy(tollgate_idempotency::key::KeyPolicy::STRIPE),
        )
        .service(create.with_state(Arc::clone(&processor)));
    let counted = Arc::clone(&processor);
    Router::new()
        .route("/v1/charges", post_service(charge))
        .route("/v1/charges/{reference}", get(find))
        .layer(axum::middleware::map_request(move |request: Request| {
            counted.requests.fetch_add(1, Ordering::Relaxed);
            std::future::ready(request)
        }))
        .route("/v1/stats", get(stats))
        .with_state(processor)
}

#[derive(Debug, Deserialize)]
struct ChargeRequest {
    /// In minor units.
    amount: i64,
    currency: String,
    payment_method: String,
}

impl ChargeRequest {
    fn parse(body: &[u8]) -> Result<Self, String> {
        let request: ChargeRequest = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if request.amount <= 0 {
            return Err("`amount` must be a positive number of minor units".into());
        }
        if request.currency.len() != 3 || !request.currency.bytes().all(|b| b.is_ascii_uppercase())
        {
            return Err("`currency` must be three upper-case letters".into());
        }
        if request.payment_method.is_empty() {
            return Err("`payment_method` must not be empty".into());
        }
        Ok(request)
    }
}

fn problem(status: StatusCode, title: &str, detail: impl Into<String>) -> Response {
    Problem::new(status, title)
        .detail(detail)
        .into_response()
        .map(Body::from)
}

/// `response`, with what the idempotency layer does with it.
fn with(mut response: Response, disposition: Disposition) -> Response {
    response.extensions_mut().insert(disposition);
    response
}

/// `POST /v1/charges`: the charge request read, the faults before charging, the charge
/// recorded once per reference, then the faults after (a delay, a lost answer).
async fn create(State(processor): State<Arc<Processor>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(reference) = parts
        .extensions
        .get::<Scope>()
        .map(|s| s.key().as_str().to_owned())
    else {
        return problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No key",
            "no idempotency scope",
        );
    };
    // Already read and bounded by the idempotency layer.
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let charge = match ChargeRequest::parse(&body) {
        Ok(charge) => charge,
        Err(detail) => {
            let refused = problem(StatusCode::BAD_REQUEST, "Invalid charge", detail);
            return with(refused, Disposition::Forget);
        }
    };
    if let Some(refused) = fault_before_charging(&processor) {
        return with(refused, Disposition::Forget);
    }
    let traceparent = parts
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    let kept = match record(&processor, &reference, &charge, traceparent).await {
        Ok(kept) => kept,
        Err(refused) => return refused,
    };
    let after = processor.faults.after();
    if !after.delay.is_zero() {
        tokio::time::sleep(after.delay).await;
    }
    let mut response = (StatusCode::CREATED, Json(kept)).into_response();
    if after.lose {
        tracing::debug!(reference, "losing the answer (injected fault)");
        response.extensions_mut().insert(LoseAnswer);
    }
    response
}

/// The injected refusal before anything is charged (a `429` or a `5xx`), if the dice say so.
fn fault_before_charging(processor: &Processor) -> Option<Response> {
    match processor.faults.before() {
        Before::Proceed => None,
        Before::Throttle => {
            let mut refused = problem(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                "nothing was charged; retry after the delay",
            );
            let after = HeaderValue::from(processor.faults.retry_after());
            refused.headers_mut().insert(RETRY_AFTER, after);
            Some(refused)
        }
        Before::Fail { unavailable } => {
            let status = if unavailable {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            Some(problem(
                status,
                "Processor error",
                "nothing was charged (injected fault)",
            ))
        }
    }
}

/// Records the charge for `reference` unless one is recorded; the recorded charge, or the
/// answer that refuses (storage failed, or the reference was charged for another amount).
async fn record(
    processor: &Processor,
    reference: &str,
    charge: &ChargeRequest,
    traceparent: Option<&str>,
) -> Result<Charge, Response> {
    let declined = charge.payment_method == TEST_DECLINE || processor.faults.declines();
    let mut new = Charge::new(
        reference,
        charge.amount,
        &charge.currency,
        &charge.payment_method,
        declined,
    );
    new.traceparent = traceparent.map(str::to_owned);
    let recorded = match processor.book.record(new).await {
        Ok(recorded) => recorded,
        Err(error) => {
            tracing::warn!(error = %error_chain(error.as_ref()), "charge storage failed");
            // May have committed: the record is kept, and the retry finds the charge.
            return Err(problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Storage failed",
                "retry with the same key",
            ));
        }
    };
    let kept = recorded.charge;
    if (kept.amount, kept.currency.as_str()) != (charge.amount, charge.currency.as_str()) {
        return Err(problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Reference reused",
            "this reference was charged for another amount",
        ));
    }
    Ok(kept)
}

async fn find(State(processor): State<Arc<Processor>>, Path(reference): Path<String>) -> Response {
    match processor.book.find(&reference).await {
        Ok(Some(charge)) => Json(charge).into_response(),
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            "No such charge",
            format!("no charge with reference {reference:?}"),
        ),
        Err(error) => storage_failed(&error),
    }
}

async fn stats(State(processor): State<Arc<Processor>>) -> Response {
    match processor.book.count().await {
        Ok(charges) => Json(json!({
            "charges": charges,
            "requests": processor.requests.load(Ordering::Relaxed),
        }))
        .into_response(),
        Err(error) => storage_failed(&error),
    }
}

fn storage_failed(error: &crate::charges::BoxError) -> Response {
    tracing::warn!(error = %error_chain(error.as_ref()), "charge storage failed");
    let mut response = problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "Storage failed",
        "the charge storage is unavailable",
    );
    response.headers_mut().insert(
        RETRY_AFTER,
        HeaderValue::from(Duration::from_secs(1).as_secs()),
    );
    response
}
