//! [`CircuitBreakerLayer`]: a tower middleware that calls a dependency through a
//! [`CircuitBreaker`] (feature `tower`).
//!
//! While the breaker is open, calls fail at once with [`BreakerError::Open`] (with the time
//! until it lets a probe through) instead of reaching the dependency. Each call's result is
//! judged by a classifier — for HTTP, [`CircuitBreakerLayer::http`] counts transport errors and
//! `5xx` answers — and a call dropped before it finished (cut off by a timeout layer, or its
//! caller gone) counts as a failure, like a call that hung.
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use http::{Request, Response, StatusCode};
//! use tollgate_retry::breaker::{BreakerConfig, CircuitBreaker, Window};
//! use tollgate_retry::breaker_layer::{BreakerError, CircuitBreakerLayer};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! let config = BreakerConfig::default().window(Window::Count(2)).minimum_calls(2);
//! let breaker = CircuitBreaker::new(config);
//! // A processor that is down.
//! let processor = service_fn(|_: Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(
//!         Response::builder().status(StatusCode::SERVICE_UNAVAILABLE).body(()).unwrap())
//! });
//! let client = CircuitBreakerLayer::http(breaker).layer(processor);
//! for _ in 0..2 {
//!     let answer = client.clone().oneshot(Request::new(())).await.unwrap();
//!     assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
//! }
//! let refused = client.oneshot(Request::new(())).await;
//! assert!(matches!(refused, Err(BreakerError::Open(_))));
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::Error;
use crate::breaker::CircuitBreaker;

/// Whether a call's result counts as a failure of the dependency.
pub type Failed<Res, Err> = Arc<dyn Fn(&Result<Res, Err>) -> bool + Send + Sync>;

/// Why a call through the breaker failed.
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    /// The breaker is open: the dependency was not called ([`Error::CircuitOpen`], with its
    /// `retry_after`).
    #[error(transparent)]
    Open(Error),
    /// The dependency's own error.
    #[error(transparent)]
    Inner(E),
}

/// Wraps a service in [`CircuitBreakerService`].
pub struct CircuitBreakerLayer<Res, Err> {
    breaker: CircuitBreaker,
    failed: Failed<Res, Err>,
}

impl<Res, Err> Clone for CircuitBreakerLayer<Res, Err> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer {
            breaker: self.breaker.clone(),
            failed: Arc::clone(&self.failed),
        }
    }
}

impl<Res, Err> fmt::Debug for CircuitBreakerLayer<Res, Err> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl<Res, Err> CircuitBreakerLayer<Res, Err> {
    /// Calls through `breaker`, counting a result as a failure when `failed` says so.
    pub fn new(
        breaker: CircuitBreaker,
        failed: impl Fn(&Result<Res, Err>) -> bool + Send + Sync + 'static,
    ) -> Self {
        CircuitBreakerLayer {
            breaker,
            failed: Arc::new(failed),
        }
    }
}

impl<R, Err> CircuitBreakerLayer<http::Response<R>, Err> {
    /// The HTTP rule: a transport error or a `5xx` answer is a failure of the dependency; any
    /// other answer (a `4xx` included: the request's fault) a success.
    pub fn http(breaker: CircuitBreaker) -> Self {
        CircuitBreakerLayer::new(breaker, |result: &Result<http::Response<R>, Err>| {
            result
                .as_ref()
                .map_or(true, |response| response.status().is_server_error())
        })
    }
}

impl<S, Res, Err> Layer<S> for CircuitBreakerLayer<Res, Err> {
    type Service = CircuitBreakerService<S, Res, Err>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service called through a [`CircuitBreaker`]; see the module documentation.
pub struct CircuitBreakerService<S, Res, Err> {
    inner: S,
    layer: CircuitBreakerLayer<Res, Err>,
}

impl<S: Clone, Res, Err> Clone for CircuitBreakerService<S, Res, Err> {
    fn clone(&self) -> Self {
        CircuitBreakerService {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, Res, Err> fmt::Debug for CircuitBreakerService<S, Res, Err> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerService")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, Req, Res, Err> Service<Req> for CircuitBreakerService<S, Res, Err>
where
    S: Service<Req, Response = Res, Error = Err> + Clone + Send + 'static,
    S::Future: Send,
    Req: Send + 'static,
    Res: Send + 'static,
    Err: Send + 'static,
{
    type Response = Res;
    type Error = BreakerError<Err>;
    type Future = Pin<Box<dyn Future<Output = Result<Res, BreakerError<Err>>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(BreakerError::Inner)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        // The service polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (breaker, failed) = (self.layer.breaker.clone(), Arc::clone(&self.layer.failed));
        Box::pin(async move {
            // Dropped with this future before the call finished, the permit records a failure.
            let permit = breaker.try_acquire().map_err(BreakerError::Open)?;
            let result = inner.call(request).await;
            if failed(&result) {
                permit.failure();
            } else {
                permit.success();
            }
            result.map_err(BreakerError::Inner)
        })
    }
}
