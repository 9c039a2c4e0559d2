//! The [`RateLimiter`] trait, its object-safe twin [`DynRateLimiter`], and the checks every
//! backend makes before touching state.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{Decision, Error, PolicyKey};

/// A rate limiter: decides a request's policy keys together.
///
/// Implementations must be atomic across the keys of one call: either every policy admits the
/// request and each consumes `cost`, or none consumes anything. See [`Decision`] for what is
/// reported; a decision borrows the keys it was taken for.
///
/// The methods return plain futures, so code that names the backend type
/// (`MemoryLimiter`, `RedisLimiter`, or a generic `L: RateLimiter`) pays no allocation and no
/// virtual call: the memory backend's future is ready at once and costs what the synchronous
/// [`MemoryLimiter::check_now`](crate::MemoryLimiter::check_now) costs. To choose the backend at
/// run time, hold an `Arc<dyn DynRateLimiter>` instead: every `RateLimiter` is one, and the
/// trait object is itself a `RateLimiter` (one boxed future per call).
///
/// Implement it with `async fn`; a wrapper stays generic over the limiter it wraps:
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use tollgate_ratelimit::{Decision, Error, PolicyKey, RateLimiter};
///
/// /// Counts the decisions of the limiter it wraps.
/// #[derive(Debug)]
/// struct Counted<L> {
///     inner: L,
///     decisions: AtomicU64,
/// }
///
/// impl<L: RateLimiter> RateLimiter for Counted<L> {
///     async fn check<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
///         self.decisions.fetch_add(1, Ordering::Relaxed);
///         self.inner.check(keys, cost).await
///     }
///
///     async fn peek<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
///         self.inner.peek(keys, cost).await
///     }
///
///     async fn refund(&self, keys: &[PolicyKey], cost: u64) -> Result<(), Error> {
///         self.inner.refund(keys, cost).await
///     }
///
///     async fn reset(&self, keys: &[PolicyKey]) -> Result<(), Error> {
///         self.inner.reset(keys).await
///     }
/// }
/// ```
pub trait RateLimiter: Send + Sync + std::fmt::Debug {
    /// Admits the request and consumes `cost` from every key, or denies it and consumes nothing.
    ///
    /// Fails with [`Error::InsufficientCapacity`] if `cost` exceeds a policy's capacity (it could
    /// never be admitted), [`Error::DuplicateKey`] if a key repeats, or a backend error.
    fn check<'k>(
        &self,
        keys: &'k [PolicyKey],
        cost: u64,
    ) -> impl Future<Output = Result<Decision<'k>, Error>> + Send;

    /// Reports what [`check`](Self::check) would decide for `cost`, consuming nothing; the
    /// remaining counts are the current ones.
    fn peek<'k>(
        &self,
        keys: &'k [PolicyKey],
        cost: u64,
    ) -> impl Future<Output = Result<Decision<'k>, Error>> + Send;

    /// Gives back `cost` to every key, e.g. when the request failed before doing any work.
    /// Never gives back more than was consumed.
    fn refund(
        &self,
        keys: &[PolicyKey],
        cost: u64,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Forgets what `keys` have used: each starts again as a key never seen, with its whole
    /// quota (a support desk giving a customer their quota back). A key not tracked is left
    /// as it is.
    fn reset(&self, keys: &[PolicyKey]) -> impl Future<Output = Result<(), Error>> + Send;
}

/// A boxed future, as [`DynRateLimiter`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`RateLimiter`] as a trait object: for a backend chosen at run time
/// (`Arc<dyn DynRateLimiter>`).
///
/// Every [`RateLimiter`] implements it, and `dyn DynRateLimiter` implements [`RateLimiter`], so a
/// trait object goes wherever a limiter does. Each call boxes its future (measured in
/// `docs/performance.md`); name the backend type where that matters.
///
/// ```
/// use std::sync::Arc;
/// use tollgate_ratelimit::{DynRateLimiter, MemoryLimiter};
///
/// let limiter: Arc<dyn DynRateLimiter> = Arc::new(MemoryLimiter::new());
/// # let _ = limiter;
/// ```
pub trait DynRateLimiter: Send + Sync + std::fmt::Debug {
    /// [`RateLimiter::check`], boxed.
    fn check_boxed<'a, 'k: 'a>(
        &'a self,
        keys: &'k [PolicyKey],
        cost: u64,
    ) -> BoxFuture<'a, Result<Decision<'k>, Error>>;

    /// [`RateLimiter::peek`], boxed.
    fn peek_boxed<'a, 'k: 'a>(
        &'a self,
        keys: &'k [PolicyKey],
        cost: u64,
    ) -> BoxFuture<'a, Result<Decision<'k>, Error>>;

    /// [`RateLimiter::refund`], boxed.
    fn refund_boxed<'a>(
        &'a self,
        keys: &'a [PolicyKey],
        cost: u64,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// [`RateLimiter::reset`], boxed.
    fn reset_boxed<'a>(&'a self, keys: &'a [PolicyKey]) -> BoxFuture<'a, Result<(), Error>>;
}

impl<L: RateLimiter> DynRateLimiter for L {
    fn check_boxed<'a, 'k: 'a>(
        &'a self,
        keys: &'k [PolicyKey],
        cost: u64,
    ) -> BoxFuture<'a, Result<Decision<'k>, Error>> {
        Box::pin(self.check(keys, cost))
    }

    fn peek_boxed<'a, 'k: 'a>(
        &'a self,
        keys: &'k [PolicyKey],
        cost: u64,
    ) -> BoxFuture<'a, Result<Decision<'k>, Error>> {
        Box::pin(self.peek(keys, cost))
    }

    fn refund_boxed<'a>(
        &'a self,
        keys: &'a [PolicyKey],
        cost: u64,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.refund(keys, cost))
    }

    fn reset_boxed<'a>(&'a self, keys: &'a [PolicyKey]) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.reset(keys))
    }
}

// `async fn` rather than returning the box: the box lives for the shorter of `self` and the
// keys, a lifetime an `impl Future` return type cannot name.
impl RateLimiter for dyn DynRateLimiter + '_ {
    async fn check<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
        self.check_boxed(keys, cost).await
    }

    async fn peek<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
        self.peek_boxed(keys, cost).await
    }

    async fn refund(&self, keys: &[PolicyKey], cost: u64) -> Result<(), Error> {
        self.refund_boxed(keys, cost).await
    }

    async fn reset(&self, keys: &[PolicyKey]) -> Result<(), Error> {
        self.reset_boxed(keys).await
    }
}

impl<L: RateLimiter + ?Sized> RateLimiter for Arc<L> {
    fn check<'k>(
        &self,
        keys: &'k [PolicyKey],
        cost: u64,
    ) -> impl Future<Output = Result<Decision<'k>, Error>> + Send {
        (**self).check(keys, cost)
    }

    fn peek<'k>(
        &self,
        keys: &'k [PolicyKey],
        cost: u64,
    ) -> impl Future<Output = Result<Decision<'k>, Error>> + Send {
        (**self).peek(keys, cost)
    }

    fn refund(
        &self,
        keys: &[PolicyKey],
        cost: u64,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        (**self).refund(keys, cost)
    }

    fn reset(&self, keys: &[PolicyKey]) -> impl Future<Output = Result<(), Error>> + Send {
        (**self).reset(keys)
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
