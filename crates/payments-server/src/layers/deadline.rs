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

use super::Refusal;
use super::stage::{Next, Step, call};
use crate::state::AppState;

/// Reads the body by the deadline (`408`; `413` past the limit), then answers `503` if the rest
/// of the stack has not answered by the same deadline. Dropping a payment mid-way is safe: its
/// claim expires after the lease and the retry reconciles with the processor.
///
/// `read_body: false` for routes that take no body: one declared too large is still refused,
/// and any other is left unread, so a stranger cannot make the server hold one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Enforce {
    pub(crate) read_body: bool,
}

impl Step for Enforce {
    fn run<S: Next>(
        &self,
        state: Arc<AppState>,
        request: Request,
        next: S,
    ) -> impl Future<Output = Response> + Send + 'static {
        let timeout = state.timeouts.request;
        let deadline = Instant::now() + timeout;
        let too_large = super::body::too_large(&request);
        let read_body = self.read_body;
        async move {
            if let Some(refused) = too_large {
                return refused;
            }
            let request = if read_body {
                match super::body::read(request, deadline, timeout).await {
                    Ok(request) => request,
                    Err(refused) => return refused,
                }
            } else {
                request
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
