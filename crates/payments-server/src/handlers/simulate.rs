//! `POST /api/v1/simulate-concurrent`: `concurrent_count` copies of one payment with one
//! `Idempotency-Key`, sent at once through the payment pipeline (rate limits, idempotency,
//! processor, accounting), and a report of how each was answered — what that many clients
//! would see.
//!
//! The request is checked once before anything fans out (the count, the content type, the key
//! and the body, which must be a valid payment), and before its own rate limit: a broken
//! request is one `400` or `422` that consumes nothing.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use std::future::Future;

use axum::extract::{Query, Request};
use axum::response::Response;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tollgate_http::idempotency::IdempotencyOutcome;
use tollgate_http::ratelimit::RateLimited;
use tollgate_idempotency::IdempotencyKey;
use tower::ServiceExt;
use tower_http::request_id::RequestId;

use crate::layers::request_id::{self, X_REQUEST_ID};
use crate::layers::stage::{Next, Step, call};
use crate::payment::{Invalid, PaymentRequest};
use crate::{paths, responses};

/// The most requests one simulation sends.
const MAX_COUNT: u32 = 100;

/// `?concurrent_count=N`.
#[derive(Debug, Deserialize)]
pub(crate) struct CountQuery {
    concurrent_count: Option<u32>,
}

/// A checked simulation, in the request's extensions.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    count: u32,
    key: String,
    body: Bytes,
}

/// Checks the whole request once, before its rate limit — the count, the content type, the key
/// and the payment itself — and puts its [`Plan`] in its extensions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlanFirst;

impl Step for PlanFirst {
    fn run<S: Next>(
        &self,
        request: Request,
        next: S,
    ) -> impl Future<Output = Response> + Send + 'static {
        checked(request, next)
    }
}

async fn checked<S: Next>(request: Request, next: S) -> Response {
    match plan(request).await {
        Ok(request) => call(next, request).await,
        Err(refused) => refused,
    }
}

/// The request with its [`Plan`] in its extensions, or the one answer that refuses it.
async fn plan(request: Request) -> Result<Request, Response> {
    let count = match Query::<CountQuery>::try_from_uri(request.uri()) {
        Ok(Query(CountQuery { concurrent_count })) => concurrent_count.unwrap_or(10),
        Err(_) => 0,
    };
    if !(1..=MAX_COUNT).contains(&count) {
        let found = request.uri().query().unwrap_or_default().to_owned();
        let detail = format!("concurrent_count must be 1–{MAX_COUNT} (query: {found:?})");
        return Err(responses::simple(StatusCode::BAD_REQUEST, detail));
    }
    if let Err(refused) = tollgate_http::content_type::require_json(request.headers()) {
        return Err(responses::respond(refused));
    }
    let key = match request.headers().get("idempotency-key") {
        None => format!("simulate-{}", uuid::Uuid::now_v7().simple()),
        Some(_) => match IdempotencyKey::from_headers(request.headers()) {
            Ok(key) => key.as_str().to_owned(),
            Err(error) => {
                return Err(responses::simple(
                    StatusCode::BAD_REQUEST,
                    error.to_string(),
                ));
            }
        },
    };
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, crate::layers::body::LIMIT)
        .await
        .unwrap_or_default();
    if let Err(invalid) = PaymentRequest::parse(&body) {
        return Err(not_a_payment(invalid, &body));
    }
    let mut request = Request::from_parts(parts, Body::empty());
    request.extensions_mut().insert(Plan { count, key, body });
    Ok(request)
}

/// The answer while the endpoint is off.
pub(crate) async fn off() -> Response {
    responses::simple(
        StatusCode::NOT_FOUND,
        "simulate-concurrent is a testing endpoint and is off; start the server with --testing \
         (or testing.simulate_concurrent = true) to use it",
    )
}

/// The one answer for a body that is not a valid payment.
fn not_a_payment(invalid: Invalid, body: &[u8]) -> Response {
    match invalid {
        Invalid::Malformed(message) => {
            // `curl -d '{…}' --data-urlencode concurrent_count=10` appends the count to the
            // JSON body: say where it belongs.
            let hint = if body.windows(17).any(|w| w == b"concurrent_count=") {
                "; `concurrent_count` is a query parameter: POST /api/v1/simulate-concurrent?concurrent_count=10, with the JSON payment alone as the body"
            } else {
                ""
            };
            let detail = format!("the body is not a payment request: {message}{hint}");
            responses::simple(StatusCode::BAD_REQUEST, detail)
        }
        Invalid::Fields(errors) => responses::invalid_payment(&errors),
    }
}

/// How the copies were answered.
#[derive(Debug, Default)]
struct Tally {
    executed: u32,
    replayed: u32,
    conflicted: u32,
    rate_limited: u32,
    other: u32,
    statuses: BTreeMap<u16, u32>,
    transaction_ids: BTreeSet<String>,
}

/// What a client reads of a payment answer.
#[derive(Deserialize)]
struct Receipt {
    transaction_id: Option<String>,
}

impl Tally {
    async fn add(&mut self, response: Response) {
        *self.statuses.entry(response.status().as_u16()).or_default() += 1;
        let facts = response.extensions();
        match (
            facts.get::<IdempotencyOutcome>(),
            facts.get::<RateLimited>(),
        ) {
            (Some(IdempotencyOutcome::Executed), _) => self.executed += 1,
            (Some(IdempotencyOutcome::Replayed), _) => self.replayed += 1,
            (Some(IdempotencyOutcome::Conflict), _) => self.conflicted += 1,
            (_, Some(_)) => self.rate_limited += 1,
            _ => self.other += 1,
        }
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        if let Ok(Receipt {
            transaction_id: Some(id),
        }) = serde_json::from_slice(&body)
        {
            self.transaction_ids.insert(id);
        }
    }
}

/// One copy of the planned payment, as the caller's own request `parent_id.i`.
fn copy(plan: &Plan, parent: &http::request::Parts, i: u32) -> Request {
    let mut request = Request::post(paths::PAYMENTS)
        .header(CONTENT_TYPE, "application/json")
        .header("idempotency-key", plan.key.as_str())
        .body(Body::from(plan.body.clone()))
        .unwrap_or_default();
    // Who is asking, from where, and by when: as for the parent.
    request.extensions_mut().extend(parent.extensions.clone());
    request.extensions_mut().remove::<Plan>();
    let id = format!("{}.{i}", request_id::of(&parent.extensions));
    if let Ok(id) = HeaderValue::try_from(id) {
        request.headers_mut().insert(X_REQUEST_ID, id.clone());
        request.extensions_mut().insert(RequestId::new(id));
    }
    request
}

/// Sends the planned copies at once through `payments` and reports how each was answered.
pub(crate) async fn run<P: Next>(payments: P, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let Some(plan) = parts.extensions.get::<Plan>().cloned() else {
        return responses::unavailable("the simulation was not planned");
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..plan.count {
        let copy = copy(&plan, &parts, i);
        let payments = payments.clone();
        tasks.spawn(async move { payments.oneshot(copy).await });
    }
    let mut tally = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(response)) => tally.add(response).await,
            Ok(Err(never)) => match never {},
            Err(_) => tally.other += 1,
        }
    }
    responses::json(
        StatusCode::OK,
        &json!({
            "concurrent_count": plan.count,
            "idempotency_key": plan.key,
            "executed": tally.executed,
            "replayed": tally.replayed,
            "conflicted": tally.conflicted,
            "rate_limited": tally.rate_limited,
            "other": tally.other,
            "statuses": tally.statuses,
            "transaction_ids": tally.transaction_ids,
        }),
    )
}
