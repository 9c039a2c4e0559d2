//! One deadline per request, from when it is admitted: a client too slow to send its body gets
//! `408`, a handler too slow to answer gets `503` with `Retry-After`.
//! tower-http's timeout answers a bare `408` for both, which is not this contract. The body is
//! read whole and bounded (see [`body`](super::body)), here or further down by the same
//! deadline, so everything after the read has it in memory.

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use tokio::time::Instant;

use super::Refusal;
use super::stage::{Next, Step, call};
use crate::state::AppState;

/// The moment a request must be answered by, in its extensions when [`Enforce`] leaves the
/// body to [`ReadBody`](super::body::ReadBody) further down: the body then has the same
/// deadline as the answer, so a client too slow to send it still gets `408`, not `503`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(pub(crate) Instant);

/// When [`Enforce`] reads the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Body {
    /// Never: for routes that take no body. One declared too large is still refused, and any
    /// other is left unread, so a stranger cannot make the server hold one.
    Unread,
    /// Here, before the rest of the stack.
    Read,
    /// Further down, by [`ReadBody`](super::body::ReadBody), after the steps that can refuse a
    /// request from its head (the rate limits): a refused request's body is never read, and a
    /// client that sent `Expect: 100-continue` is never asked for it.
    Later,
}

/// Sets the request's deadline and answers `503` if the rest of the stack has not answered by
/// then; reads the body by the same deadline (`408`; `413` past the limit) where [`Body`] says.
/// A body declared too large is refused at once, from the head. Dropping a payment mid-way is
/// safe: its claim expires after the lease and the retry reconciles with the processor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Enforce {
    pub(crate) body: Body,
}

impl Step for Enforce {
    fn run<S: Next>(
        &self,
        state: Arc<AppState>,
        mut request: Request,
        next: S,
    ) -> impl Future<Output = Response> + Send + 'static {
        let timeout = state.timeouts.request;
        let deadline = Instant::now() + timeout;
        let too_large = super::body::too_large(&request);
        let body = self.body;
        if body == Body::Later {
            request.extensions_mut().insert(Deadline(deadline));
        }
        async move {
            if let Some(refused) = too_large {
                return refused;
            }
            let request = if body == Body::Read {
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
