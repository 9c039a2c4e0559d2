//! One deadline per request, from when it is admitted: a client too slow to send its body gets
//! `408`, a handler too slow to answer gets `503` with `Retry-After`.
//! tower-http's timeout answers a bare `408` for both, which is not this contract. The body is
//! read here too, whole and bounded (see [`body`](super::body)), so everything after this step
//! has it in memory.

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use tokio::time::Instant;

use super::stage::{call, Next, Step};
use super::Refusal;
use crate::state::AppState;

/// Reads the body by the deadline (`408`; `413` past the limit), then answers `503` if the rest
/// of the stack has not answered by the same deadline. Dropping a payment mid-way is safe: its
/// claim expires after the lease and the retry reconciles with the processor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Enforce;

impl Step for Enforce {
    fn run<S: Next>(
        &self,
        state: Arc<AppState>,
        request: Request,
        next: S,
    ) -> impl Future<Output = Response> + Send + 'static {
        let timeout = state.timeouts.request;
        let deadline = Instant::now() + timeout;
        async move {
            let request = match super::body::read(request, deadline, timeout).await {
                Ok(request) => request,
                Err(refused) => return refused,
            };
            match tokio::time::timeout_at(deadline, call(next, request)).await {
                Ok(response) => response,
                Err(_) => {
                    let detail = format!("the request did not finish within {timeout:?}");
                    let mut response = crate::problem::unavailable(detail);
                    response.extensions_mut().insert(Refusal::DeadlineExceeded);
                    response
                }
            }
        }
    }
}
