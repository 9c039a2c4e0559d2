//! [`RateLimitLayer`].

use std::fmt;
use std::sync::Arc;

use tollgate_ratelimit::{PolicySet, RateLimiter};
use tower::Layer;

use super::service::RateLimitService;
use super::subject::SubjectExtractor;

/// Adds [`RateLimitService`] around a service. Cloning is cheap; clones share the limiter.
#[derive(Clone)]
pub struct RateLimitLayer {
    pub(super) limiter: Arc<dyn RateLimiter>,
    pub(super) policies: Arc<PolicySet>,
    pub(super) extractor: Arc<dyn SubjectExtractor>,
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// Limits requests by `policies` on `limiter`, keyed by what `extractor` says of each.
    pub fn new(
        limiter: Arc<dyn RateLimiter>,
        policies: PolicySet,
        extractor: impl SubjectExtractor,
    ) -> Self {
        RateLimitLayer {
            limiter,
            policies: Arc::new(policies),
            extractor: Arc::new(extractor),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            layer: self.clone(),
        }
    }
}
