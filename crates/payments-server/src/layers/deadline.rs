//! One deadline per request, from when it is admitted: a client too slow to send its body gets
//! `408`, a handler too slow to answer gets `503` with `Retry-After`.
//! tower-http's timeout answers a bare `408` for both, which is not this contract. The body is
//! read whole and bounded (see [`body`](super::body)), here or further down by the same
//! deadline, so everything after the read has it in memory.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use tokio::time::{Instant, Timeout};
use tower::{Layer, Service, ServiceExt};

use super::Refusal;
use super::body::Deadline;
use super::stage::Next;

/// When [`DeadlineLayer`] reads the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyRead {
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

/// Sets the request's deadline, `timeouts.request` from its arrival, and answers `503` if the
/// rest of the stack has not answered by then; reads the body by the same deadline (`408`;
/// `413` past the limit) where [`BodyRead`] says. A body declared too large is refused at once,
/// from the head. Dropping a payment mid-way is safe: its claim expires after the lease and the
/// retry reconciles with the processor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeadlineLayer {
    timeout: Duration,
    body: BodyRead,
}

impl DeadlineLayer {
    pub(crate) fn new(timeout: Duration, body: BodyRead) -> Self {
        DeadlineLayer { timeout, body }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = WithDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithDeadline {
            timeout: self.timeout,
            body: self.body,
            inner,
        }
    }
}

/// A service under [`DeadlineLayer`]. Unless it reads the body itself, the request goes to the
/// inner service's own future under a timer: nothing is boxed or cloned per request.
#[derive(Clone, Debug)]
pub(crate) struct WithDeadline<S> {
    timeout: Duration,
    body: BodyRead,
    inner: S,
}

impl<S: Next> Service<Request> for WithDeadline<S> {
    type Response = Response;
    type Error = Infallible;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let timeout = self.timeout;
        let deadline = Instant::now() + timeout;
        if let Some(refused) = super::body::too_large(&request) {
            return DeadlineFuture::Answered {
                response: Some(refused),
            };
        }
        match self.body {
            BodyRead::Read => {
                // Only `simulate-concurrent` reads its body here: the boxed path is its own.
                let next = self.inner.clone();
                DeadlineFuture::Reading {
                    future: Box::pin(async move {
                        let request = match super::body::read(request, deadline, timeout).await {
                            Ok(request) => request,
                            Err(refused) => return refused,
                        };
                        // The same timer and the same 503 as a request that needs no read.
                        let running = DeadlineFuture::Running {
                            future: tokio::time::timeout_at(deadline, next.oneshot(request)),
                            timeout,
                        };
                        match running.await {
                            Ok(response) => response,
                            Err(never) => match never {},
                        }
                    }),
                }
            }
            BodyRead::Later | BodyRead::Unread => {
                if self.body == BodyRead::Later {
                    request.extensions_mut().insert(Deadline(deadline));
                }
                DeadlineFuture::Running {
                    future: tokio::time::timeout_at(deadline, self.inner.call(request)),
                    timeout,
                }
            }
        }
    }
}

/// The `503` for a request not answered within `timeout`.
fn too_late(timeout: Duration) -> Response {
    let detail = format!("the request did not finish within {timeout:?}");
    let mut response = crate::responses::unavailable(detail);
    response.extensions_mut().insert(Refusal::DeadlineExceeded);
    response
}

pin_project_lite::pin_project! {
    /// [`Enforcing`]'s future.
    #[project = Projected]
    pub(crate) enum DeadlineFuture<F> {
        /// Refused from the head.
        Answered { response: Option<Response> },
        /// Reading the body, then the rest of the stack.
        Reading { future: Pin<Box<dyn Future<Output = Response> + Send>> },
        /// The rest of the stack, by the deadline.
        Running {
            #[pin]
            future: Timeout<F>,
            timeout: Duration,
        },
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for DeadlineFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projected::Answered { response } => Poll::Ready(Ok(response
                .take()
                .expect("DeadlineFuture polled after it completed"))),
            Projected::Reading { future } => future.as_mut().poll(cx).map(Ok),
            Projected::Running { future, timeout } => match std::task::ready!(future.poll(cx)) {
                Ok(answer) => Poll::Ready(answer),
                Err(_) => Poll::Ready(Ok(too_late(*timeout))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use http::StatusCode;
    use tower::ServiceExt;

    use super::*;
    use crate::config::FileConfig;

    /// Answers `200` after `delay`, `204` if the request carries its [`Deadline`].
    fn slow(delay: Duration) -> impl super::super::stage::Next {
        tower::service_fn(move |request: Request| async move {
            tokio::time::sleep(delay).await;
            let mut response = Response::new(Body::empty());
            if request.extensions().get::<Deadline>().is_some() {
                *response.status_mut() = StatusCode::NO_CONTENT;
            }
            Ok::<_, Infallible>(response)
        })
    }

    fn with_deadline(
        body: BodyRead,
        delay: Duration,
    ) -> WithDeadline<impl super::super::stage::Next> {
        let timeout = FileConfig::default().timeouts.request;
        DeadlineLayer::new(timeout, body).layer(slow(delay))
    }

    // Paused time: the runtime jumps to the next timer instead of waiting for it.
    #[tokio::test(start_paused = true)]
    async fn an_answer_past_the_deadline_is_a_503_and_one_within_it_passes() {
        let timeout = FileConfig::default().timeouts.request;
        let late = with_deadline(BodyRead::Unread, timeout * 2)
            .oneshot(Request::new(Body::empty()))
            .await
            .expect("infallible");
        assert_eq!(late.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(matches!(
            late.extensions().get::<Refusal>(),
            Some(Refusal::DeadlineExceeded)
        ));
        let on_time = with_deadline(BodyRead::Unread, timeout / 2)
            .oneshot(Request::new(Body::empty()))
            .await
            .expect("infallible");
        assert_eq!(
            on_time.status(),
            StatusCode::OK,
            "no deadline handed on for an unread body"
        );
        let later = with_deadline(BodyRead::Later, Duration::ZERO)
            .oneshot(Request::new(Body::empty()))
            .await
            .expect("infallible");
        assert_eq!(
            later.status(),
            StatusCode::NO_CONTENT,
            "the deadline is handed on"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_read_here_reaches_the_next_service_in_memory() {
        // The next service sees a body of known length: the one read here, not the stream.
        let whole = tower::service_fn(|request: Request| async move {
            let status = match axum::body::HttpBody::size_hint(request.body()).exact() {
                Some(2) => StatusCode::OK,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let mut response = Response::new(Body::empty());
            *response.status_mut() = status;
            Ok::<_, Infallible>(response)
        });
        let streamed = Body::from_stream(futures_util::stream::iter([Ok::<_, Infallible>(
            bytes::Bytes::from_static(b"{}"),
        )]));
        let timeout = FileConfig::default().timeouts.request;
        let answer = DeadlineLayer::new(timeout, BodyRead::Read)
            .layer(whole)
            .oneshot(Request::new(streamed))
            .await
            .expect("infallible");
        assert_eq!(answer.status(), StatusCode::OK);
    }
}
