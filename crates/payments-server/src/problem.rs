//! Problem answers (RFC 9457) as axum responses.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::StatusCode;
use http::header::RETRY_AFTER;
use tollgate_http::problem::Problem;

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
