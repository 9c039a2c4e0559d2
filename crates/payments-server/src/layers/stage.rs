//! How the server's own middlewares are written: a [`Step`] is an async function of the state,
//! the request and the next service; [`StageLayer`] makes it a tower layer. Two narrower kinds
//! run without boxing a future or cloning the rest of the stack per request: a [`Check`]
//! decides from the request alone, before anything is awaited ([`CheckLayer`]), and an
//! [`Around`] notes something from the request and acts on the answer ([`AroundLayer`]).
//!
//! Like axum's `from_fn_with_state`, but the next service is passed as itself — a concrete
//! clone — instead of boxed behind `Next`: the server stacks several steps on every request,
//! and boxing each one's remainder cost an allocation and a deep clone per step (measured with
//! callgrind: a quarter more instructions per payment than without).

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use futures_util::FutureExt as _;
use futures_util::future::Map;
use tower::util::Oneshot;
use tower::{Layer, Service};

use crate::state::AppState;

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
        state: Arc<AppState>,
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

/// `step` as a tower layer over the state.
#[derive(Clone, Debug)]
pub(crate) struct StageLayer<St> {
    step: St,
    state: Arc<AppState>,
}

impl<St> StageLayer<St> {
    pub(crate) fn new(state: &Arc<AppState>, step: St) -> Self {
        StageLayer {
            step,
            state: Arc::clone(state),
        }
    }
}

impl<St: Clone, S> Layer<S> for StageLayer<St> {
    type Service = Stage<St, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Stage {
            step: self.step.clone(),
            state: Arc::clone(&self.state),
            inner,
        }
    }
}

/// A [`Step`] around a service.
#[derive(Clone, Debug)]
pub(crate) struct Stage<St, S> {
    step: St,
    state: Arc<AppState>,
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
        let answer = self
            .step
            .run(Arc::clone(&self.state), request, self.inner.clone());
        Box::pin(answer.map(Ok))
    }
}

/// A middleware that decides from the request alone, at once: it admits the request (and may add
/// to its extensions) or answers it.
pub(crate) trait Check: Clone + Send + Sync + 'static {
    /// The answer that refuses `request`, or `None` to pass it on.
    fn check(&self, state: &AppState, request: &mut Request) -> Option<Response>;
}

/// `check` as a tower layer over the state.
#[derive(Clone, Debug)]
pub(crate) struct CheckLayer<C> {
    check: C,
    state: Arc<AppState>,
}

impl<C> CheckLayer<C> {
    pub(crate) fn new(state: &Arc<AppState>, check: C) -> Self {
        CheckLayer {
            check,
            state: Arc::clone(state),
        }
    }
}

impl<C: Clone, S> Layer<S> for CheckLayer<C> {
    type Service = Checked<C, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Checked {
            check: self.check.clone(),
            state: Arc::clone(&self.state),
            inner,
        }
    }
}

/// A [`Check`] in front of a service. Readiness is the inner service's, and an admitted request
/// goes to the inner service's own future: nothing is boxed or cloned per request (a [`Stage`]
/// boxes its step's future and clones the rest of the stack into it).
#[derive(Clone, Debug)]
pub(crate) struct Checked<C, S> {
    check: C,
    state: Arc<AppState>,
    inner: S,
}

impl<C: Check, S: Next> Service<Request> for Checked<C, S> {
    type Response = Response;
    type Error = Infallible;
    type Future = futures_util::future::Either<S::Future, Ready<Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match self.check.check(&self.state, &mut request) {
            None => futures_util::future::Either::Left(self.inner.call(request)),
            Some(refusal) => futures_util::future::Either::Right(std::future::ready(Ok(refusal))),
        }
    }
}

/// A middleware that notes what it needs from the request, lets the rest of the stack answer,
/// then acts on the answer; it awaits only when [`After::Later`] says so.
pub(crate) trait Around: Clone + Send + Sync + 'static {
    /// What it keeps from the request for the answer.
    type Noted: Send + 'static;

    /// Notes what [`after`](Around::after) needs, before the request goes on.
    fn before(&self, state: &AppState, request: &Request) -> Self::Noted;

    /// Acts on the answer.
    fn after(&self, state: &Arc<AppState>, noted: Self::Noted, response: Response) -> After;
}

/// What an [`Around`] makes of the answer.
pub(crate) enum After {
    /// The answer goes out now.
    Now(Response),
    /// The answer goes out once this has run (boxed: it is the rare case, and would otherwise
    /// sit in every request's future).
    Later(Pin<Box<dyn Future<Output = Response> + Send>>),
}

/// `around` as a tower layer over the state.
#[derive(Clone, Debug)]
pub(crate) struct AroundLayer<A> {
    around: A,
    state: Arc<AppState>,
}

impl<A> AroundLayer<A> {
    pub(crate) fn new(state: &Arc<AppState>, around: A) -> Self {
        AroundLayer {
            around,
            state: Arc::clone(state),
        }
    }
}

impl<A: Clone, S> Layer<S> for AroundLayer<A> {
    type Service = Arounded<A, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Arounded {
            around: self.around.clone(),
            state: Arc::clone(&self.state),
            inner,
        }
    }
}

/// An [`Around`] about a service; readiness is the inner service's.
#[derive(Clone, Debug)]
pub(crate) struct Arounded<A, S> {
    around: A,
    state: Arc<AppState>,
    inner: S,
}

impl<A: Around, S: Next> Service<Request> for Arounded<A, S> {
    type Response = Response;
    type Error = Infallible;
    type Future = AroundFuture<A, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let noted = self.around.before(&self.state, &request);
        AroundFuture {
            inner: self.inner.call(request),
            pending: Some((self.around.clone(), Arc::clone(&self.state), noted)),
            tail: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// [`Arounded`]'s future: the inner service's, then what [`Around::after`] asks for.
    pub(crate) struct AroundFuture<A: Around, F> {
        #[pin]
        inner: F,
        pending: Option<(A, Arc<AppState>, A::Noted)>,
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
        let (around, state, noted) = this
            .pending
            .take()
            .expect("AroundFuture polled after it completed");
        match around.after(&state, noted, response) {
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
    use http::{HeaderValue, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::config::FileConfig;

    fn state() -> Arc<AppState> {
        AppState::in_memory(&FileConfig::default(), &[]).expect("a state in memory")
    }

    /// Answers `200`, or the status a `Mark` extension names; counts its calls.
    fn inner(calls: &Arc<AtomicUsize>) -> impl Next {
        let calls = Arc::clone(calls);
        tower::service_fn(move |request: Request| {
            calls.fetch_add(1, Ordering::SeqCst);
            let status = request.extensions().get::<Mark>().map_or(200, |m| m.0);
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::from_u16(status).expect("a status");
            std::future::ready(Ok::<_, Infallible>(response))
        })
    }

    #[derive(Clone, Copy)]
    struct Mark(u16);

    /// Passes requests with an `x-pass` header (marking them), refuses the rest with `403`.
    #[derive(Clone)]
    struct NeedsHeader;

    impl Check for NeedsHeader {
        fn check(&self, _state: &AppState, request: &mut Request) -> Option<Response> {
            if request.headers().contains_key("x-pass") {
                request.extensions_mut().insert(Mark(201));
                return None;
            }
            let mut refusal = Response::new(Body::empty());
            *refusal.status_mut() = StatusCode::FORBIDDEN;
            Some(refusal)
        }
    }

    #[tokio::test]
    async fn a_check_refuses_without_calling_on_and_passes_what_it_marked() {
        let (state, calls) = (state(), Arc::new(AtomicUsize::new(0)));
        let service = CheckLayer::new(&state, NeedsHeader).layer(inner(&calls));
        let refused = service.clone().oneshot(Request::new(Body::empty())).await;
        assert_eq!(refused.expect("infallible").status(), StatusCode::FORBIDDEN);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "a refused request goes no further"
        );
        let mut request = Request::new(Body::empty());
        request
            .headers_mut()
            .insert("x-pass", HeaderValue::from_static("1"));
        let passed = service.oneshot(request).await.expect("infallible");
        assert_eq!(
            passed.status(),
            StatusCode::CREATED,
            "the mark reached the next service"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// Notes the request's method; answers after a tail that is not ready at its first poll.
    #[derive(Clone)]
    struct TailAfter(Arc<AtomicUsize>);

    impl Around for TailAfter {
        type Noted = &'static str;

        fn before(&self, _state: &AppState, request: &Request) -> &'static str {
            if request.method() == http::Method::POST {
                "post"
            } else {
                "other"
            }
        }

        fn after(&self, _state: &Arc<AppState>, noted: &'static str, response: Response) -> After {
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
        let (state, calls, afters) = (
            state(),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let service = AroundLayer::new(&state, TailAfter(Arc::clone(&afters))).layer(inner(&calls));
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
