//! The responses the layer builds: replays, refusals, and the headers a stored response keeps.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::Full;
use tollgate_idempotency::Error;
use tollgate_idempotency::store::StoredResponse;

use super::outcome::{IdempotencyOutcome, StoreFailure};
use crate::problem::Problem;

/// `Idempotent-Replayed`.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The headers a stored response keeps for its replays: `Content-Type` and `Location`. A
/// handler that completes the record itself ([`Disposition::Completed`]) stores these, so its
/// replays match the layer's.
///
/// [`Disposition::Completed`]: super::Disposition::Completed
pub fn kept_headers(headers: &http::HeaderMap) -> Vec<(String, String)> {
    kept(headers, &[CONTENT_TYPE, LOCATION])
}

/// The headers of `names` in `headers`, as a stored response keeps them.
pub(super) fn kept(headers: &http::HeaderMap, names: &[HeaderName]) -> Vec<(String, String)> {
    names
        .iter()
        .filter_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            Some((name.as_str().to_owned(), value.to_owned()))
        })
        .collect()
}

pub(super) fn problem_bytes(
    status: StatusCode,
    title: &str,
    detail: impl Into<String>,
) -> Response<Bytes> {
    Problem::new(status, title).detail(detail).into_response()
}

/// A problem answered by the layer itself, saying what it did.
pub(super) fn refusal(
    status: StatusCode,
    title: &str,
    detail: impl Into<String>,
    outcome: IdempotencyOutcome,
) -> Response<Full<Bytes>> {
    let (parts, body) = problem_bytes(status, title, detail).into_parts();
    let mut response = Response::from_parts(parts, Full::new(body));
    response.extensions_mut().insert(outcome);
    response
}

/// A response produced here, as it would be stored.
pub(super) fn stored(response: Response<Bytes>) -> StoredResponse {
    StoredResponse {
        status: response.status().as_u16(),
        headers: kept_headers(response.headers()),
        body: response.into_body(),
    }
}

/// What the layer did when the driver answered `error`.
fn outcome_of(error: &Error) -> IdempotencyOutcome {
    match error {
        Error::Key(_) => IdempotencyOutcome::InvalidKey,
        Error::InvalidBody(_) => IdempotencyOutcome::InvalidBody,
        Error::Mismatch => IdempotencyOutcome::Mismatch,
        Error::Conflict { .. } => IdempotencyOutcome::Conflict,
        Error::Fenced => IdempotencyOutcome::Fenced,
        _ => IdempotencyOutcome::StoreFailed,
    }
}

/// The problem response for a driver error.
pub(super) fn error_response(error: &Error) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let title = status.canonical_reason().unwrap_or("Error");
    let outcome = outcome_of(error);
    // A store's own message can name hosts and tables: clients get a fixed one.
    let mut response = if outcome == IdempotencyOutcome::StoreFailed {
        let detail = "the idempotency store is unavailable; retry with the same Idempotency-Key";
        let mut response = refusal(status, title, detail, outcome);
        response
            .extensions_mut()
            .insert(StoreFailure(crate::error::error_chain(error)));
        response
    } else {
        refusal(status, title, error.to_string(), outcome)
    };
    if let Some(wait) = error.retry_after() {
        response
            .headers_mut()
            .insert(RETRY_AFTER, crate::retry_after::header_value(wait));
    } else if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// `stored` as an answer, flagged `Idempotent-Replayed: true` or `false`.
pub(super) fn replay(stored: StoredResponse, replayed: bool) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(stored.body));
    *response.status_mut() =
        StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in stored.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    mark(response, replayed)
}

/// The first answer of an execution: the inner service's own head (every header and extension
/// it set, and the status it stored) with the body it stored — the stored head need not be
/// parsed back.
pub(super) fn first_answer(
    stored: StoredResponse,
    live: http::response::Parts,
) -> Response<Full<Bytes>> {
    mark(Response::from_parts(live, Full::new(stored.body)), false)
}

/// Says whether `response` is a replay, in its `Idempotent-Replayed` header and its outcome.
fn mark(mut response: Response<Full<Bytes>>, replayed: bool) -> Response<Full<Bytes>> {
    let flag = if replayed { "true" } else { "false" };
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static(flag));
    response.extensions_mut().insert(if replayed {
        IdempotencyOutcome::Replayed
    } else {
        IdempotencyOutcome::Executed
    });
    response
}
