//! [`RateLimitLayer`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use tollgate_ratelimit::{DynRateLimiter, LivePolicies, RateLimiter};

use crate::RequestHead;

use super::subject::SubjectExtractor;

/// What a request costs in quota (1 unless [`RateLimitLayer::cost`] says otherwise).
pub(super) type Cost = Arc<dyn Fn(&RequestHead<'_>) -> u64 + Send + Sync>;

/// The answer to a denied request, when [`RateLimitLayer::on_limited`] replaces the default.
pub(super) type OnLimited = Arc<dyn Fn(&Denied<'_>) -> Response<Bytes> + Send + Sync>;

/// A request the limits refused, as [`RateLimitLayer::on_limited`] sees it.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Denied<'a> {
    /// The policy that denied.
    pub policy: &'a str,
    /// When a retry can succeed (at least a second, rounded up).
    pub retry_after: Duration,
}

/// Adds [`RateLimitService`](super::RateLimitService) around a service. Cloning is cheap; clones share the limiter.
///
/// `L` is the limiter's type: name it (`Arc<MemoryLimiter>` makes `L = MemoryLimiter`) and each
/// decision is a direct call with no boxed future; an `Arc<dyn DynRateLimiter>` (the default
/// type) chooses the backend at run time for one allocation per request.
pub struct RateLimitLayer<L: ?Sized = dyn DynRateLimiter> {
    pub(super) limiter: Arc<L>,
    pub(super) policies: LivePolicies,
    pub(super) extractor: Arc<dyn SubjectExtractor>,
    pub(super) cost: Option<Cost>,
    pub(super) on_limited: Option<OnLimited>,
}

impl<L: ?Sized> Clone for RateLimitLayer<L> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            limiter: Arc::clone(&self.limiter),
            policies: self.policies.clone(),
            extractor: Arc::clone(&self.extractor),
            cost: self.cost.clone(),
            on_limited: self.on_limited.clone(),
        }
    }
}

impl<L: RateLimiter + ?Sized> fmt::Debug for RateLimitLayer<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

impl<L: RateLimiter + ?Sized> RateLimitLayer<L> {
    /// Limits requests by `policies` on `limiter`, keyed by what `extractor` says of each.
    /// `policies` is a `PolicySet`, fixed, or a [`LivePolicies`] whose table you may replace
    /// while the layer serves (each request is decided on one whole table).
    pub fn new(
        limiter: Arc<L>,
        policies: impl Into<LivePolicies>,
        extractor: impl SubjectExtractor,
    ) -> Self {
        RateLimitLayer {
            limiter,
            policies: policies.into(),
            extractor: Arc::new(extractor),
            cost: None,
            on_limited: None,
        }
    }

    /// What each request costs in quota, from its head (a batch endpoint may cost its item
    /// count); 1 otherwise. A cost of 0 only reads the quota.
    pub fn cost(mut self, cost: impl Fn(&RequestHead<'_>) -> u64 + Send + Sync + 'static) -> Self {
        self.cost = Some(Arc::new(cost));
        self
    }

    /// Answers a denied request with `respond`'s response instead of the problem+json `429`.
    /// The layer still adds the rate-limit headers, `Retry-After` and the [`RateLimited`]
    /// extension.
    ///
    /// [`RateLimited`]: super::RateLimited
    pub fn on_limited(
        mut self,
        respond: impl Fn(&Denied<'_>) -> Response<Bytes> + Send + Sync + 'static,
    ) -> Self {
        self.on_limited = Some(Arc::new(respond));
        self
    }
}
