//! A tower middleware that retries a client's requests with a [`Retrier`].
//!
//! The service clones the request for every attempt, so the request type must be `Clone` (for
//! HTTP, a body such as `Full<Bytes>`), and an `Idempotency-Key` header is therefore sent
//! unchanged on every attempt. [`RetryLayer::http`] wires the HTTP rules: statuses from
//! [`classify`](crate::classify), `Retry-After`, transport errors retried, and non-idempotent
//! requests without an `Idempotency-Key` sent exactly once.
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode};
//! use tollgate_retry::backoff::Backoff;
//! use tollgate_retry::clock::ManualClock;
//! use tollgate_retry::layer::RetryLayer;
//! use tollgate_retry::retry::{Retrier, RetryPolicy};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = Arc::clone(&calls);
//! // A server that is unavailable once, then creates the payment.
//! let server = service_fn(move |_request: Request<String>| {
//!     let n = counter.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         let status = if n == 0 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::CREATED };
//!         Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(()).unwrap())
//!     }
//! });
//! let clock = ManualClock::new();
//! let retrier = Retrier::with_clock(
//!     RetryPolicy::new(Backoff::exponential(Duration::from_millis(100), Duration::from_secs(2))),
//!     Arc::new(clock.clone()),
//!     Arc::new(clock.clone()),
//! );
//! let client = RetryLayer::http(retrier).layer(server);
//!
//! let paid = Request::post("/api/v1/payments")
//!     .header("idempotency-key", "order-7c1f0e9a2b4d4e11")
//!     .body("{\"amount\":\"10.00\"}".to_owned())
//!     .unwrap();
//! let response = client.clone().oneshot(paid).await.unwrap();
//! assert_eq!(response.status(), StatusCode::CREATED);
//! assert_eq!(calls.load(Ordering::SeqCst), 2);
//!
//! // Without an Idempotency-Key a POST is sent once, whatever the answer.
//! calls.store(0, Ordering::SeqCst);
//! let unsafe_post = Request::post("/api/v1/payments").body(String::new()).unwrap();
//! let response = client.oneshot(unsafe_post).await.unwrap();
//! assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
//! assert_eq!(calls.load(Ordering::SeqCst), 1);
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use tower::{Layer, Service, ServiceExt};

use crate::classify::{http_attempt, may_retry};
use crate::retry::{Attempt, Retrier};

/// Classifies an attempt's result.
pub type Classifier<Res, Err> = Arc<dyn Fn(&Result<Res, Err>) -> Attempt + Send + Sync>;
/// Decides whether a request may be sent more than once.
pub type Repeatable<Req> = Arc<dyn Fn(&Req) -> bool + Send + Sync>;

/// Wraps a service in [`RetryService`].
pub struct RetryLayer<Req, Res, Err> {
    retrier: Arc<Retrier>,
    classify: Classifier<Res, Err>,
    repeatable: Repeatable<Req>,
}

impl<Req, Res, Err> Clone for RetryLayer<Req, Res, Err> {
    fn clone(&self) -> Self {
        RetryLayer {
            retrier: Arc::clone(&self.retrier),
            classify: Arc::clone(&self.classify),
            repeatable: Arc::clone(&self.repeatable),
        }
    }
}

impl<Req, Res, Err> fmt::Debug for RetryLayer<Req, Res, Err> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("retrier", &self.retrier)
            .finish_non_exhaustive()
    }
}

impl<Req, Res, Err> RetryLayer<Req, Res, Err> {
    /// Retries every request whose result `classify` says to retry.
    pub fn new(
        retrier: Retrier,
        classify: impl Fn(&Result<Res, Err>) -> Attempt + Send + Sync + 'static,
    ) -> Self {
        RetryLayer {
            retrier: Arc::new(retrier),
            classify: Arc::new(classify),
            repeatable: Arc::new(|_| true),
        }
    }

    /// Only requests for which `repeatable` is true are retried; others are sent once.
    pub fn retry_if(mut self, repeatable: impl Fn(&Req) -> bool + Send + Sync + 'static) -> Self {
        self.repeatable = Arc::new(repeatable);
        self
    }
}

impl<B, R, Err> RetryLayer<http::Request<B>, http::Response<R>, Err> {
    /// The HTTP rules: retry 408/429/5xx (and 409 with `Retry-After`) honouring `Retry-After`,
    /// retry transport errors, and repeat only idempotent requests or those with an
    /// `Idempotency-Key`.
    pub fn http(retrier: Retrier) -> Self {
        RetryLayer::new(retrier, |result: &Result<http::Response<R>, Err>| {
            http_attempt(result, SystemTime::now())
        })
        .retry_if(|request: &http::Request<B>| may_retry(request.method(), request.headers()))
    }
}

impl<S, Req, Res, Err> Layer<S> for RetryLayer<Req, Res, Err> {
    type Service = RetryService<S, Req, Res, Err>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The retrying service. Clones share the retrier (and so its budget).
pub struct RetryService<S, Req, Res, Err> {
    inner: S,
    layer: RetryLayer<Req, Res, Err>,
}

impl<S: Clone, Req, Res, Err> Clone for RetryService<S, Req, Res, Err> {
    fn clone(&self) -> Self {
        RetryService {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, Req, Res, Err> fmt::Debug for RetryService<S, Req, Res, Err> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, Req, Res, Err> Service<Req> for RetryService<S, Req, Res, Err>
where
    S: Service<Req, Response = Res, Error = Err> + Clone + Send + 'static,
    S::Future: Send,
    Req: Clone + Send + Sync + 'static,
    Res: Send + 'static,
    Err: Send + 'static,
{
    type Response = Res;
    type Error = Err;
    type Future = Pin<Box<dyn Future<Output = Result<Res, Err>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Err>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        // Keep the service that was polled ready for this call; retries use fresh clones.
        let template = self.inner.clone();
        let mut ready = Some(std::mem::replace(&mut self.inner, template.clone()));
        let layer = self.layer.clone();
        Box::pin(async move {
            if !(layer.repeatable)(&request) {
                let mut service = ready.take().unwrap_or(template);
                return service.call(request).await;
            }
            let classify = Arc::clone(&layer.classify);
            layer
                .retrier
                .run(
                    move |_| {
                        let request = request.clone();
                        let ready = ready.take();
                        let template = template.clone();
                        async move {
                            match ready {
                                Some(mut service) => service.call(request).await,
                                None => template.oneshot(request).await,
                            }
                        }
                    },
                    move |result| classify(result),
                )
                .await
        })
    }
}
