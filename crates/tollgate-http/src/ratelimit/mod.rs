//! A tower middleware that rate limits requests with any [`RateLimiter`].
//!
//! Every response carries the rate-limit headers of the request's binding policy
//! (`X-RateLimit-*`, `RateLimit`, `RateLimit-Policy`); a denied request is answered `429` with
//! `Retry-After` and a problem+json body naming the policy, without reaching the inner service
//! and without consuming any quota, and its response carries a [`RateLimited`] extension. If the
//! limiter itself fails (a backend in `FailureMode::ReturnError`), the answer is `503` with
//! `Retry-After: 1`.
//!
//! A request costs 1 unless [`RateLimitLayer::cost`] says otherwise (from its head: a batch
//! may cost its item count), and [`RateLimitLayer::on_limited`] replaces the `429` body with
//! your own answer (the headers and the extension are still added).
//!
//! What the limiter keys on comes from a [`SubjectExtractor`] — any
//! `Fn(&RequestHead) -> Subject` — so the layer fits any stack and any body type: read the
//! authenticated user from an extension your auth layer set, the client IP from
//! [`client_ip`](crate::client_ip), and the route template from your router (axum's
//! `MatchedPath`).
//!
//! With a shared backend such as Redis, put the limiter behind tollgate-ratelimit's
//! `denials::DenialCache`: once the backend denies a key, the process answers that key's
//! requests `429` from memory until the wait ends, so a client that keeps asking after its
//! `429` costs the backend nothing (the answer is what the backend would give: a denied
//! request consumes nothing, so a denial only grows stricter until its wait ends).
//!
//! [`RateLimiter`]: tollgate_ratelimit::RateLimiter
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use tollgate_http::ratelimit::{RateLimitLayer, RateLimited, Subject};
//! use tollgate_http::RequestHead;
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
//! let layer = RateLimitLayer::new(Arc::new(MemoryLimiter::new()), policies, |req: &RequestHead<'_>| {
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
//! assert_eq!(denied.extensions().get::<RateLimited>().unwrap().policy, "payments");
//! # });
//! ```

pub mod headers;
mod layer;
mod service;
mod subject;

pub use crate::future::ResponseFuture;
pub use layer::{Denied, RateLimitLayer};
pub use service::RateLimitService;
pub use subject::{Subject, SubjectExtractor};

/// Put in the extensions of every response the layer saw a decision for: the binding policy
/// (the one closest to its limit, or the one that denied) and whether the request was admitted.
/// Lets outer layers count decisions by policy and result.
#[derive(Clone, Debug)]
pub struct RateLimitDecision {
    /// The binding policy; `None` when no policy applied to the request.
    pub policy: Option<std::sync::Arc<tollgate_ratelimit::Policy>>,
    /// Whether the request was admitted.
    pub allowed: bool,
    /// The shadow policies that would have refused the request (decided only for admitted
    /// requests; see `tollgate_ratelimit::shadow`). Empty when the subject's tier has none, or
    /// when deciding them failed: a shadow never changes an answer.
    pub would_deny: Vec<std::sync::Arc<tollgate_ratelimit::Policy>>,
}

/// Put in the extensions of a `429` the layer answered: which policy denied. Lets outer layers
/// (metrics, audit) tell the limiter's refusals apart without parsing the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimited {
    /// The name of the policy that denied.
    pub policy: String,
}
