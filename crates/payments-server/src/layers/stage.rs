//! How the server's own middlewares are written, holding no application state (each middleware
//! carries what it needs): a [`Step`] is an async function of the request and the next
//! service; [`StageLayer`] makes it a tower layer. An [`Around`] notes something from the
//! request and acts on the answer ([`AroundLayer`]) without boxing a future or cloning the rest
//! of the stack per request. A middleware that only decides from the request is tower-http's
//! `ValidateRequestHeaderLayer::custom` (authentication, the JSON check).
//!
//! Like axum's `from_fn_with_state`, but the next service is passed as itself — a concrete
//! clone — instead of boxed behind `Next`: the server stacks several steps on every request,
//! and boxing each one's remainder cost an allocation and a deep clone per step (measured with
//! callgrind: a quarter more instructions per payment than without).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use futures_util::FutureExt as _;
use futures_util::future::Map;
use tower::util::Oneshot;
use tower::{Layer, Service};

/// What a step calls next: the rest of the stack.
pub(crate) trait Next:
    Service<Request, Response = Response, Error = Infallible, Future = Self::Answer>
    + Clone
    + Send
    + 'static
{
    /// The rest of the stack's future.
    type Answer: Future<Output = Result<Response, Infallible>> + Send + 'static;
}

impl<S> Next for S
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Answer = S::Future;
}

/// One middleware of the server: runs around `next`.
pub(crate) trait Step: Clone + Send + Sync + 'static {
    /// Answers `request`, calling `next` or not.
    fn run<S: Next>(
        &self,
        request: Request,
        next: S,
    ) -> impl Future<Output = Response> + Send + 'static;
}

/// Calls `next` with `request`, once it is ready.
///
/// A combinator, not an `async fn`: an async function's future keeps its arguments beside the
/// future it awaits, so each step's future would hold the request and the rest of the stack
/// twice, and every step moves its whole future once more when it is boxed.
pub(crate) fn call<S: Next>(next: S, request: Request) -> Call<S> {
    tower::ServiceExt::oneshot(next, request).map(answered)
}

/// What [`call`] returns.
pub(crate) type Call<S> = Map<Oneshot<S, Request>, fn(Result<Response, Infallible>) -> Response>;

fn answered(result: Result<Response, Infallible>) -> Response {
    match result {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// `step` as a tower layer.
#[derive(Clone, Debug)]
pub(crate) struct StageLayer<St> {
    step: St,
}

impl<St> StageLayer<St> {
    pub(crate) fn new(step: St) -> Self {
        StageLayer { step }
    }
}

impl<St: Clone, S> Layer<S> for StageLayer<St> {
    type Service = Stage<St, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Stage {
            step: self.step.clone(),
            inner,
        }
    }
}

/// A [`Step`] around a service.
#[derive(Clone, Debug)]
pub(crate) struct Stage<St, S> {
    step: St,
    inner: S,
}

impl<St: Step, S: Next> Service<Request> for Stage<St, S> {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let answer = self.step.run(request, self.inner.clone());
        Box::pin(answer.map(Ok))
    }
}

/// A middleware that notes what it needs from the request, lets the rest of the stack answer,
/// then acts on the answer; it awaits only when [`After::Later`] says so. The layer shares it
/// behind one `Arc`, so a request clones one pointer however much the middleware holds.
pub(crate) trait Around: Send + Sync + 'static {
    /// What it keeps from the request for the answer.
    type Noted: Send + 'static;

    /// Notes what [`after`](Around::after) needs, before the request goes on.
    fn before(&self, request: &Request) -> Self::Noted;

    /// Acts on the answer.
    fn after(&self, noted: Self::Noted, response: Response) -> After;
}

/// What an [`Around`] makes of the answer.
pub(crate) enum After {
    /// The answer goes out now.
    Now(Response),
    /// The answer goes out once this has run (boxed: it is the rare case, and would otherwise
    /// sit in every request's future).
    Later(Pin<Box<dyn Future<Output = Response> + Send>>),
}

/// `around` as a tower layer.
#[derive(Debug)]
pub(crate) struct AroundLayer<A> {
    around: Arc<A>,
}

impl<A> Clone for AroundLayer<A> {
    fn clone(&self) -> Self {
        AroundLayer {
            around: Arc::clone(&self.around),
        }
    }
}

impl<A> AroundLayer<A> {
    pub(crate) fn new(around: A) -> Self {
        AroundLayer {
            around: Arc::new(around),
        }
    }
}

impl<A, S> Layer<S> for AroundLayer<A> {
    type Service = Arounded<A, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Arounded {
            around: Arc::clone(&self.around),
            inner,
        }
    }
}

/// An [`Around`] about a service; readiness is the inner service's.
#[derive(Debug)]
pub(crate) struct Arounded<A, S> {
    around: Arc<A>,
    inner: S,
}

impl<A, S: Clone> Clone for Arounded<A, S> {
    fn clone(&self) -> Self {
        Arounded {
            around: Arc::clone(&self.around),
            inner: self.inner.clone(),
        }
    }
}

impl<A: Around, S: Next> Service<Request> for Arounded<A, S> {
    type Response = Response;
    type Error = Infallible;
    type Future = AroundFuture<A, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let noted = self.around.before(&request);
        AroundFuture {
            inner: self.inner.call(request),
            pending: Some((Arc::clone(&self.around), noted)),
            tail: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// [`Arounded`]'s future: the inner service's, then what [`Around::after`] asks for.
    pub(crate) struct AroundFuture<A: Around, F> {
        #[pin]
        inner: F,
        pending: Option<(Arc<A>, A::Noted)>,
        tail: Option<Pin<Box<dyn Future<Output = Response> + Send>>>,
    }
}

impl<A, F> Future for AroundFuture<A, F>
where
    A: Around,
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(tail) = this.tail.as_mut() {
            return tail.as_mut().poll(cx).map(Ok);
        }
        let response = match std::task::ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let (around, noted) = this
            .pending
            .take()
            .expect("AroundFuture polled after it completed");
        match around.after(noted, response) {
            After::Now(response) => Poll::Ready(Ok(response)),
            After::Later(mut tail) => {
                let polled = tail.as_mut().poll(cx).map(Ok);
                *this.tail = Some(tail);
                polled
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::body::Body;
    use http::HeaderValue;
    use tower::ServiceExt;

    use std::sync::Arc;

    use super::*;

    /// Answers `200`; counts its calls.
    fn inner(calls: &Arc<AtomicUsize>) -> impl Next {
        let calls = Arc::clone(calls);
        tower::service_fn(move |request: Request| {
            calls.fetch_add(1, Ordering::SeqCst);
            let _ = request;
            let response = Response::new(Body::empty());
            std::future::ready(Ok::<_, Infallible>(response))
        })
    }

    /// Notes the request's method; answers after a tail that is not ready at its first poll.
    #[derive(Clone)]
    struct TailAfter(Arc<AtomicUsize>);

    impl Around for TailAfter {
        type Noted = &'static str;

        fn before(&self, request: &Request) -> &'static str {
            if request.method() == http::Method::POST {
                "post"
            } else {
                "other"
            }
        }

        fn after(&self, noted: &'static str, response: Response) -> After {
            self.0.fetch_add(1, Ordering::SeqCst);
            let mut response = response;
            After::Later(Box::pin(async move {
                tokio::task::yield_now().await;
                let noted = HeaderValue::from_static(noted);
                response.headers_mut().insert("x-noted", noted);
                response
            }))
        }
    }

    #[tokio::test]
    async fn an_around_acts_once_on_the_answer_and_waits_for_its_tail() {
        let (calls, afters) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let service = AroundLayer::new(TailAfter(Arc::clone(&afters))).layer(inner(&calls));
        let request = http::Request::post("/")
            .body(Body::empty())
            .expect("a request");
        let response = service.oneshot(request).await.expect("infallible");
        assert_eq!(
            response.headers()["x-noted"],
            "post",
            "noted before, written after"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            afters.load(Ordering::SeqCst),
            1,
            "after runs once, across the tail's polls"
        );
    }
}
