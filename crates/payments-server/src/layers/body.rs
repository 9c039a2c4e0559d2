//! The request body, read once and bounded: 64 KiB (`413`), by the request's deadline (`408`).
//! Runs after authentication on authenticated routes, so an anonymous client never makes the
//! server hold a body.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::StatusCode;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tollgate_http::idempotency::DEFAULT_BODY_LIMIT;

use crate::problem;
use crate::state::AppState;

/// The largest body any route accepts.
pub(crate) const LIMIT: usize = DEFAULT_BODY_LIMIT;

/// Reads the whole body before the rest of the stack runs, and hands it on in memory.
pub(crate) async fn buffer(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let timeout = state.timeouts.request;
    let deadline = super::deadline::of(&request, timeout);
    let (parts, body) = request.into_parts();
    let read = Limited::new(body, LIMIT).collect();
    let bytes = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.is::<LengthLimitError>() => {
            let detail = format!("the request body is larger than {LIMIT} bytes");
            return problem::simple(StatusCode::PAYLOAD_TOO_LARGE, detail);
        }
        Ok(Err(error)) => {
            let detail = format!("the request body could not be read: {error}");
            return problem::simple(StatusCode::BAD_REQUEST, detail);
        }
        Err(_) => {
            let detail = format!("the request body did not arrive within {timeout:?}");
            return problem::simple(StatusCode::REQUEST_TIMEOUT, detail);
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
