//! The [`RateLimiter`] trait, and the checks every backend makes before touching state.

use async_trait::async_trait;

use crate::{Decision, Error, PolicyKey};

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
