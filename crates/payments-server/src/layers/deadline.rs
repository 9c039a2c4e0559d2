//! One deadline per request, set when it arrives: a client too slow to send its body gets
//! `408` (see [`body`](super::body)), a handler too slow to answer gets `503` with
//! `Retry-After` (here). tower-http's timeout answers a bare `408` for both, which is not this
//! contract.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tokio::time::Instant;

use super::Refusal;
use crate::state::AppState;

/// When the request must be answered.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(pub(crate) Instant);

/// Sets the request's [`Deadline`] from `timeouts.request`.
pub(crate) async fn start(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let deadline = Deadline(Instant::now() + state.timeouts.request);
    request.extensions_mut().insert(deadline);
    next.run(request).await
}

/// The request's deadline (one request timeout from now if none was set).
pub(crate) fn of(request: &Request, timeout: Duration) -> Instant {
    request
        .extensions()
        .get::<Deadline>()
        .map_or_else(|| Instant::now() + timeout, |d| d.0)
}

/// Answers `503` if the rest of the stack has not answered by the deadline. Dropping a payment
/// mid-way is safe: its claim expires after the lease and the retry reconciles with the
/// processor.
pub(crate) async fn enforce(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let timeout = state.timeouts.request;
    let deadline = of(&request, timeout);
    match tokio::time::timeout_at(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let detail = format!("the request did not finish within {timeout:?}");
            let mut response = crate::problem::unavailable(detail);
            response.extensions_mut().insert(Refusal::DeadlineExceeded);
            response
        }
    }
}
