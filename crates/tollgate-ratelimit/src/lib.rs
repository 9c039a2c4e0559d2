//! Rate limiting for payment APIs: sliding window, sliding log and GCRA token bucket, decided
//! atomically over every policy of a request, in memory or on Redis.
//!
//! - [`RateLimiter`] is the one async trait: [`check`](RateLimiter::check) a request's
//!   [`PolicyKey`]s with a cost, [`peek`](RateLimiter::peek) without consuming, or
//!   [`refund`](RateLimiter::refund). A denied request consumes nothing from any policy.
//! - [`Policy`] names a rule: a [`Scope`] (global, user, IP, endpoint), an [`Algorithm`] and an
//!   optional endpoint. A [`PolicySet`] picks the keys that apply to a [`RequestContext`].
//! - [`Decision`] reports every policy and the binding one; [`headers`] renders it as
//!   `X-RateLimit-*`, IETF `RateLimit`/`RateLimit-Policy` and `Retry-After`.
//! - Backends: [`MemoryLimiter`] (feature `memory`, default) and
//!   [`RedisLimiter`](redis::RedisLimiter) (feature `redis`).
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
//! use tollgate_ratelimit::{MemoryLimiter, PolicySet, RateLimiter, RequestContext};
//!
//! // Global 1000/min, per user 100/min, payments 10/min per user, burst 20/s holding 50.
//! let policies = PolicySet::defaults();
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
#![deny(missing_docs)]

pub mod _guide;
// The arithmetic and the request checks serve the backends; a build with no backend feature
// (only the trait, policies and headers) leaves them unused.
#[cfg_attr(not(feature = "memory"), allow(dead_code))]
mod algorithm;
pub mod clock;
pub mod config;
mod decision;
mod error;
pub mod headers;
#[cfg(feature = "memory")]
pub mod memory;
mod policy;
#[cfg(feature = "redis")]
pub mod redis;

use async_trait::async_trait;

pub use clock::Timestamp;
pub use decision::{Decision, PolicyDecision};
pub use error::Error;
#[cfg(feature = "memory")]
pub use memory::MemoryLimiter;
pub use policy::{
    Algorithm, Policy, PolicyKey, PolicySet, RequestContext, Scope, MAX_LIMIT_WINDOW_PRODUCT,
};

/// A rate limiter: decides a request's policy keys together.
///
/// Implementations must be atomic across the keys of one call: either every policy admits the
/// request and each consumes `cost`, or none consumes anything. See [`Decision`] for what is
/// reported; a decision borrows the keys it was taken for.
#[async_trait]
pub trait RateLimiter: Send + Sync + std::fmt::Debug {
    /// Admits the request and consumes `cost` from every key, or denies it and consumes nothing.
    ///
    /// Fails with [`Error::InsufficientCapacity`] if `cost` exceeds a policy's capacity (it could
    /// never be admitted), [`Error::DuplicateKey`] if a key repeats, or a backend error.
    async fn check<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error>;

    /// Reports what [`check`](Self::check) would decide for `cost`, consuming nothing; the
    /// remaining counts are the current ones.
    async fn peek<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error>;

    /// Gives back `cost` to every key, e.g. when the request failed before doing any work.
    /// Never gives back more than was consumed.
    async fn refund(&self, keys: &[PolicyKey], cost: u64) -> Result<(), Error>;
}

#[async_trait]
impl<L: RateLimiter + ?Sized> RateLimiter for std::sync::Arc<L> {
    async fn check<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
        (**self).check(keys, cost).await
    }

    async fn peek<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
        (**self).peek(keys, cost).await
    }

    async fn refund(&self, keys: &[PolicyKey], cost: u64) -> Result<(), Error> {
        (**self).refund(keys, cost).await
    }
}

/// The checks every backend makes before touching state: every policy can admit `cost` at all,
/// and no key repeats (it would be counted twice).
#[inline]
#[cfg_attr(not(feature = "memory"), allow(dead_code))]
pub(crate) fn validate(keys: &[PolicyKey], cost: u64) -> Result<(), Error> {
    let fits = keys.iter().all(|key| cost <= key.policy().capacity());
    if fits && (keys.len() < 2 || keys_are_distinct(keys)) {
        Ok(())
    } else {
        Err(invalid_request(keys, cost))
    }
}

#[cfg_attr(not(feature = "memory"), allow(dead_code))]
fn keys_are_distinct(keys: &[PolicyKey]) -> bool {
    // A request carries a handful of keys: compare the precomputed hashes pairwise, and the keys
    // themselves only when two hashes agree.
    keys.iter().enumerate().all(|(i, key)| {
        !keys[..i]
            .iter()
            .any(|k| k.hash128() == key.hash128() && k == key)
    })
}

/// The error for a request [`validate`] rejected; off the hot path.
#[cold]
#[cfg_attr(not(feature = "memory"), allow(dead_code))]
fn invalid_request(keys: &[PolicyKey], cost: u64) -> Error {
    for (i, key) in keys.iter().enumerate() {
        let capacity = key.policy().capacity();
        if cost > capacity {
            return Error::InsufficientCapacity {
                policy: key.policy().name_arc().clone(),
                cost,
                capacity,
            };
        }
        if keys[..i].contains(key) {
            return Error::DuplicateKey(key.storage_key().to_owned());
        }
    }
    // Not reached: `validate` only calls this for a request one of the checks above rejects.
    Error::InvalidConfig("rate-limit request rejected".to_owned())
}
