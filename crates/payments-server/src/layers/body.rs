//! The request body, read once and bounded: 64 KiB (`413`), by the request's deadline (`408`).
//! Read after authentication on authenticated routes, so an anonymous client never makes the
//! server hold a body, and on `POST /api/v1/payments` after the rate limits too, so a refused
//! client's body is never read.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::body::HttpBody as _;
use axum::extract::Request;
use axum::response::Response;
use http::StatusCode;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::time::Instant;
use tollgate_http::idempotency::DEFAULT_BODY_LIMIT;

use super::stage::{Next, Step, call};
use crate::responses;

/// The largest body any route accepts.
pub(crate) const LIMIT: usize = DEFAULT_BODY_LIMIT;

/// The moment a request must be answered by, in its extensions when the deadline layer leaves
/// the body to [`ReadBody`] further down: the body then has the same deadline as the answer, so
/// a client too slow to send it still gets `408`, not `503`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline(pub(crate) Instant);

/// `413` if the body is known to be over the limit before it is read (hyper knows it from
/// `Content-Length`): answered from the head, before anything of the body is read, and before a
/// client that sent `Expect: 100-continue` is told to send it.
pub(crate) fn too_large(request: &Request) -> Option<Response> {
    let declared = request.body().size_hint().lower();
    (declared > LIMIT as u64).then(|| {
        let detail = format!("the request body is larger than {LIMIT} bytes");
        responses::simple(StatusCode::PAYLOAD_TOO_LARGE, detail)
    })
}

/// The request with its whole body in memory, read by `deadline`; or the refusal.
pub(crate) async fn read(
    request: Request,
    deadline: Instant,
    timeout: Duration,
) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    let read = Limited::new(body, LIMIT).collect();
    let bytes = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.is::<LengthLimitError>() => {
            let detail = format!("the request body is larger than {LIMIT} bytes");
            return Err(responses::simple(StatusCode::PAYLOAD_TOO_LARGE, detail));
        }
        Ok(Err(error)) => {
            let detail = format!("the request body could not be read: {error}");
            return Err(responses::simple(StatusCode::BAD_REQUEST, detail));
        }
        Err(_) => {
            let detail = format!("the request body did not arrive within {timeout:?}");
            return Err(responses::simple(StatusCode::REQUEST_TIMEOUT, detail));
        }
    };
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Reads the body by the request's [`Deadline`] (set by the deadline step with
/// [`BodyRead::Later`](super::deadline::BodyRead::Later); without one, `timeouts.request` from now),
/// then calls the rest of the stack with the body in memory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadBody {
    /// `timeouts.request`: the deadline when the request carries none.
    pub(crate) timeout: Duration,
}

impl Step for ReadBody {
    fn run<S: Next>(
        &self,
        request: Request,
        next: S,
    ) -> impl Future<Output = Response> + Send + 'static {
        let timeout = self.timeout;
        let deadline = request
            .extensions()
            .get::<Deadline>()
            .map_or_else(|| Instant::now() + timeout, |deadline| deadline.0);
        async move {
            match read(request, deadline, timeout).await {
                Ok(request) => call(next, request).await,
                Err(refused) => refused,
            }
        }
    }
}
