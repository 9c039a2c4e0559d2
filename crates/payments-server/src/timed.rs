//! Backends with every call timed into `backend_call_duration_seconds`: the Redis limiter and
//! the Redis or PostgreSQL idempotency store (the PostgreSQL ledger times its own statements).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use tollgate_idempotency::fingerprint::Fingerprint;
use tollgate_idempotency::store::{Claim, ClaimOptions, IdempotencyStore, Release, StoredResponse};
use tollgate_idempotency::{Error as StoreError, Scope};
use tollgate_ratelimit::{Decision, Error as LimitError, PolicyKey, RateLimiter};

use crate::metrics::{BackendLatency, Timer};

/// A rate limiter whose decisions are timed.
pub(crate) struct TimedLimiter<L> {
    inner: L,
    check: Timer,
    peek: Timer,
    refund: Timer,
}

impl<L> TimedLimiter<L> {
    pub(crate) fn new(inner: L, backend: &'static str, latency: &BackendLatency) -> Self {
        TimedLimiter {
            inner,
            check: latency.call(backend, "rate_limit_check"),
            peek: latency.call(backend, "rate_limit_peek"),
            refund: latency.call(backend, "rate_limit_refund"),
        }
    }
}

impl<L: fmt::Debug> fmt::Debug for TimedLimiter<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TimedLimiter").field(&self.inner).finish()
    }
}

impl<L: RateLimiter> RateLimiter for TimedLimiter<L> {
    async fn check<'k>(
        &self,
        keys: &'k [PolicyKey],
        cost: u64,
    ) -> Result<Decision<'k>, LimitError> {
        self.check.time(self.inner.check(keys, cost)).await
    }

    async fn peek<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, LimitError> {
        self.peek.time(self.inner.peek(keys, cost)).await
    }

    async fn refund(&self, keys: &[PolicyKey], cost: u64) -> Result<(), LimitError> {
        self.refund.time(self.inner.refund(keys, cost)).await
    }

    async fn reset(&self, keys: &[PolicyKey]) -> Result<(), LimitError> {
        self.inner.reset(keys).await
    }
}

/// An idempotency store whose calls are timed.
pub(crate) struct TimedStore<S> {
    inner: S,
    claim: Timer,
    complete: Timer,
    release: Timer,
    cleanup: Timer,
}

impl<S> TimedStore<S> {
    pub(crate) fn new(inner: S, backend: &'static str, latency: &BackendLatency) -> Self {
        TimedStore {
            inner,
            claim: latency.call(backend, "idempotency_claim"),
            complete: latency.call(backend, "idempotency_complete"),
            release: latency.call(backend, "idempotency_release"),
            cleanup: latency.call(backend, "idempotency_cleanup"),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for TimedStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TimedStore").field(&self.inner).finish()
    }
}

#[async_trait]
impl<S: IdempotencyStore> IdempotencyStore for TimedStore<S> {
    async fn claim(
        &self,
        scope: &Scope,
        fingerprint: &Fingerprint,
        options: ClaimOptions,
    ) -> Result<Claim, StoreError> {
        self.claim
            .time(self.inner.claim(scope, fingerprint, options))
            .await
    }

    async fn complete(
        &self,
        scope: &Scope,
        fence: u64,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.complete
            .time(self.inner.complete(scope, fence, response, ttl))
            .await
    }

    async fn release(&self, scope: &Scope, fence: u64, how: Release) -> Result<(), StoreError> {
        self.release
            .time(self.inner.release(scope, fence, how))
            .await
    }

    async fn cleanup(&self, max: usize) -> Result<usize, StoreError> {
        self.cleanup.time(self.inner.cleanup(max)).await
    }
}
