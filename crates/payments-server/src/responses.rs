//! The server's answers, built in one place: problems (RFC 9457), JSON bodies, `Retry-After`.

use std::time::Duration;

use axum::body::Body;
use axum::response::IntoResponse;
use axum::response::Response;
use http::StatusCode;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::json;
use tollgate_http::problem::Problem;

use crate::payment::FieldError;

/// `problem` as a response.
pub(crate) fn respond(problem: Problem) -> Response {
    problem.into_response().map(Body::from)
}

/// A problem with the status's reason as its title.
pub(crate) fn simple(status: StatusCode, detail: impl Into<String>) -> Response {
    respond(Problem::new(status, status.canonical_reason().unwrap_or("Error")).detail(detail))
}

/// `response` with `Retry-After`, rounded as every answer's is
/// ([`tollgate_http::retry_after`]).
pub(crate) fn with_retry_after(mut response: Response, wait: Duration) -> Response {
    let value = tollgate_http::retry_after::header_value(wait);
    response.headers_mut().insert(RETRY_AFTER, value);
    response
}

/// `503` with `Retry-After: 1`.
pub(crate) fn unavailable(detail: impl Into<String>) -> Response {
    with_retry_after(
        simple(StatusCode::SERVICE_UNAVAILABLE, detail),
        Duration::from_secs(1),
    )
}

/// `body` as a JSON answer with `status`.
pub(crate) fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    // Straight to bytes: `Value`'s `Display` goes through `fmt::Write` and costs twice as much.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// The `422` for a payment whose fields are invalid, each error named.
pub(crate) fn invalid_payment(errors: &[FieldError]) -> Response {
    respond(
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid payment")
            .detail("one or more fields are invalid; see `errors`")
            .extension("errors", json!(errors)),
    )
}
