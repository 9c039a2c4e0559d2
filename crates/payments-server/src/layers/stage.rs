//! How the server's own middlewares are written: a [`Step`] is an async function of the state,
//! the request and the next service; [`StageLayer`] makes it a tower layer.
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

/// A step that answers at once or calls the rest of the stack; no state machine of its own.
pub(crate) type Either<S> = futures_util::future::Either<Call<S>, Ready<Response>>;

/// The rest of the stack answers.
pub(crate) fn pass<S: Next>(next: S, request: Request) -> Either<S> {
    futures_util::future::Either::Left(call(next, request))
}

/// This step answers, with `response`.
pub(crate) fn answer<S: Next>(response: Response) -> Either<S> {
    futures_util::future::Either::Right(std::future::ready(response))
}

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
