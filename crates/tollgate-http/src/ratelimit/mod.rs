//! A tower middleware that rate limits requests with any [`RateLimiter`].
//!
//! Every response carries the rate-limit headers of the request's binding policy
//! (`X-RateLimit-*`, `RateLimit`, `RateLimit-Policy`); a denied request is answered `429` with
//! `Retry-After` and a problem+json body naming the policy, without reaching the inner service
//! and without consuming any quota. If the limiter itself fails (a backend in
//! `FailureMode::ReturnError`), the answer is `503` with `Retry-After: 1`.
//!
//! What the limiter keys on comes from a function of the request, so the layer fits any
//! stack: read the authenticated user from an extension your auth layer set, the client IP from
//! [`client_ip`](crate::client_ip), and the route template from your router.
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use tollgate_http::ratelimit::{RateLimitLayer, Subject};
//! use std::time::Duration;
//! use tollgate_ratelimit::{Algorithm, MemoryLimiter, Policy, PolicySet, Scope};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! let payments = Policy::new("payments", Scope::User, Algorithm::sliding_window(10, Duration::from_secs(60)))
//!     .unwrap()
//!     .for_endpoint("POST /api/v1/payments");
//! let policies = PolicySet::defaults().with(2, payments).unwrap();
//! let app = service_fn(|_req: Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(Response::new(Bytes::from_static(b"paid")))
//! });
//! let layer = RateLimitLayer::new(Arc::new(MemoryLimiter::new()), policies, |req: &Request<()>| {
//!     Subject {
//!         user: req.headers().get("x-user").and_then(|v| v.to_str().ok()).map(str::to_owned),
//!         endpoint: Some(format!("{} {}", req.method(), req.uri().path())),
//!         ..Subject::default()
//!     }
//! });
//! let service = layer.layer(app);
//!
//! let request = || Request::post("/api/v1/payments").header("x-user", "alice").body(()).unwrap();
//! for _ in 0..10 {
//!     let ok = service.clone().oneshot(request()).await.unwrap();
//!     assert_eq!(ok.status(), StatusCode::OK);
//!     assert!(ok.headers().contains_key("x-ratelimit-remaining"));
//! }
//! let denied = service.clone().oneshot(request()).await.unwrap();
//! assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(denied.headers()["ratelimit-policy"], "\"payments\";q=10;w=60");
//! assert!(denied.headers().contains_key("retry-after"));
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use tollgate_ratelimit::{headers, PolicySet, RateLimiter, RequestContext};
use tower::{Layer, Service};

use crate::problem::Problem;

/// What a request is limited as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// The authenticated user, if any.
    pub user: Option<String>,
    /// The client address, after trusted-proxy handling.
    pub ip: Option<IpAddr>,
    /// `METHOD /route/template`.
    pub endpoint: Option<String>,
}

/// Put in the extensions of a `429` the layer answered: which policy denied. Lets outer layers
/// (metrics, audit) tell the limiter's refusals apart without parsing the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimited {
    /// The name of the policy that denied.
    pub policy: String,
}

type Extract<B> = Arc<dyn Fn(&Request<B>) -> Subject + Send + Sync>;

/// Adds [`RateLimitService`] around a service.
pub struct RateLimitLayer<B> {
    limiter: Arc<dyn RateLimiter>,
    policies: Arc<PolicySet>,
    extract: Extract<B>,
}

impl<B> Clone for RateLimitLayer<B> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            limiter: Arc::clone(&self.limiter),
            policies: Arc::clone(&self.policies),
            extract: Arc::clone(&self.extract),
        }
    }
}

impl<B> fmt::Debug for RateLimitLayer<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

impl<B> RateLimitLayer<B> {
    /// Limits requests by `policies` on `limiter`, keyed by what `extract` says of each request.
    pub fn new(
        limiter: Arc<dyn RateLimiter>,
        policies: PolicySet,
        extract: impl Fn(&Request<B>) -> Subject + Send + Sync + 'static,
    ) -> Self {
        RateLimitLayer {
            limiter,
            policies: Arc::new(policies),
            extract: Arc::new(extract),
        }
    }
}

impl<S, B> Layer<S> for RateLimitLayer<B> {
    type Service = RateLimitService<S, B>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The rate-limiting service; clones share the limiter (and so the limits).
pub struct RateLimitService<S, B> {
    inner: S,
    layer: RateLimitLayer<B>,
}

impl<S: Clone, B> Clone for RateLimitService<S, B> {
    fn clone(&self) -> Self {
        RateLimitService {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, B> fmt::Debug for RateLimitService<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

fn with_body<R: From<Bytes>>(response: Response<Bytes>) -> Response<R> {
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, R::from(body))
}

impl<S, B, R> Service<Request<B>> for RateLimitService<S, B>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Send + 'static,
    R: From<Bytes> + Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let subject = (self.layer.extract)(&request);
        let mut ctx = RequestContext::new();
        if let Some(user) = &subject.user {
            ctx = ctx.user(user);
        }
        if let Some(ip) = subject.ip {
            ctx = ctx.ip(ip);
        }
        if let Some(endpoint) = &subject.endpoint {
            ctx = ctx.endpoint(endpoint);
        }
        let keys = self.layer.policies.keys_for(&ctx);
        let limiter = Arc::clone(&self.layer.limiter);
        // The service polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (pairs, denied_by, retry_after) = match limiter.check(&keys, 1).await {
                Ok(decision) => {
                    let pairs: Vec<(HeaderName, HeaderValue)> = headers::to_pairs(&decision);
                    let denied_by = (!decision.is_allowed())
                        .then(|| decision.binding().map(|b| b.policy().name().to_owned()))
                        .flatten();
                    (pairs, denied_by, decision.retry_after())
                }
                Err(error) => {
                    let mut response =
                        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
                            .detail(format!("the rate limiter is unavailable: {error}"))
                            .into_response();
                    response
                        .headers_mut()
                        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                    return Ok(with_body(response));
                }
            };
            let mut response = match denied_by {
                Some(policy) => {
                    let wait = retry_after.map_or(1, |d| headers::ceil_secs(d).max(1));
                    let mut response = with_body(
                        Problem::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
                            .detail(format!("rate limit `{policy}` exceeded; retry in {wait} s"))
                            .extension("policy", policy.as_str())
                            .extension("retry_after_seconds", wait)
                            .into_response(),
                    );
                    response.extensions_mut().insert(RateLimited { policy });
                    response
                }
                None => inner.call(request).await?,
            };
            for (name, value) in pairs {
                response.headers_mut().insert(name, value);
            }
            Ok(response)
        })
    }
}
