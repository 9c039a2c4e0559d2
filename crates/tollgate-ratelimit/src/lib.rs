//! Rate limiting for payment APIs: sliding window, sliding log and GCRA token bucket, decided
//! atomically over every policy of a request, in memory or on Redis.
//!
//! - [`RateLimiter`] is the one async trait: [`check`](RateLimiter::check) a request's
//!   [`PolicyKey`]s with a cost, [`peek`](RateLimiter::peek) without consuming, or
//!   [`refund`](RateLimiter::refund). A denied request consumes nothing from any policy.
//!   Its futures are plain (static dispatch, no allocation); [`DynRateLimiter`] is the same
//!   trait as an object, for a backend chosen at run time (`Arc<dyn DynRateLimiter>`).
//! - [`Policy`] names a rule: a [`Scope`] (global, user, IP, endpoint), an [`Algorithm`] and an
//!   optional endpoint. A [`PolicySet`] picks the keys that apply to a [`RequestContext`].
//! - [`Decision`] reports every policy, the binding one and the one a caller may be shown
//!   ([`Decision::disclosed`]); `tollgate-http`'s `ratelimit::headers` renders it as
//!   `X-RateLimit-*`, IETF `RateLimit`/`RateLimit-Policy` and `Retry-After`. This crate knows
//!   no HTTP.
//! - Backends: [`MemoryLimiter`] (feature `memory`, default) and
//!   [`RedisLimiter`](redis::RedisLimiter) (feature `redis`).
//!   [`DenialCache`](denials::DenialCache) wraps any limiter and answers the denials it has seen
//!   from memory until their wait ends: a client that keeps asking after a `429` costs the
//!   backend nothing.
//! - Time comes from a [`Clock`](clock::Clock); tests use a
//!   [`ManualClock`](clock::ManualClock) and never sleep.
//!
//! The [guide](crate::_guide) explains the algorithms, their error bounds and the failure modes.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tollgate_ratelimit::Error> {
//! use std::time::Duration;
//! use tollgate_ratelimit::{Algorithm, MemoryLimiter, Policy, PolicySet, RateLimiter, RequestContext, Scope};
//!
//! // The defaults (global 1000/min, per user 100/min, burst 20/s holding 50), plus your own
//! // limit on the endpoint that moves money: 10 a minute per user.
//! let payments = Policy::new("payments", Scope::User, Algorithm::sliding_window(10, Duration::from_secs(60)))?
//!     .for_endpoint("POST /api/v1/payments");
//! let policies = PolicySet::defaults().with(2, payments)?;
//! let limiter = MemoryLimiter::new();
//!
//! let ctx = RequestContext::new().user("alice").endpoint("POST /api/v1/payments");
//! let keys = policies.keys_for(&ctx);
//! for _ in 0..10 {
//!     assert!(limiter.check(&keys, 1).await?.is_allowed());
//! }
//! let denied = limiter.check(&keys, 1).await?;
//! assert!(!denied.is_allowed());
//! assert_eq!(denied.binding().unwrap().policy().name(), "payments");
//! assert!(denied.retry_after().unwrap().as_secs() >= 5);
//!
//! // Bob is not affected by Alice's limit.
//! let bob = policies.keys_for(&RequestContext::new().user("bob").endpoint("POST /api/v1/payments"));
//! assert!(limiter.check(&bob, 1).await?.is_allowed());
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

pub mod _guide;
// The arithmetic and the request checks serve the backends; a build with no backend feature
// (only the trait and policies) leaves them unused.
#[cfg_attr(not(feature = "memory"), allow(dead_code))]
mod algorithm;
pub mod clock;
pub mod config;
mod decision;
pub mod denials;
mod error;
mod limiter;
mod live;
#[cfg(feature = "memory")]
pub mod memory;
mod policy;
mod policy_set;
#[cfg(feature = "redis")]
pub mod redis;
pub mod shadow;
// Observes the backends' decisions; every backend feature includes `memory`.
#[cfg(feature = "memory")]
pub mod telemetry;
pub mod wait;

pub use clock::Timestamp;
pub use decision::{Decision, PolicyDecision};
pub use error::{BoxError, Error};
pub(crate) use limiter::validate;
pub use limiter::{BoxFuture, DynRateLimiter, RateLimiter};
pub use live::LivePolicies;
#[cfg(feature = "memory")]
pub use memory::MemoryLimiter;
pub use policy::{Algorithm, MAX_LIMIT_WINDOW_PRODUCT, Mode, Policy, PolicyKey, Scope};
pub use policy_set::{PolicySet, RequestContext};

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
