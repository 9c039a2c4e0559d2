//! [`IdempotencyLayer`].

use std::fmt;
use std::sync::Arc;

use tollgate_idempotency::Idempotency;
use tower::Layer;

use super::identity::IdentityExtractor;
use super::service::IdempotencyService;

/// The default request-body limit: 64 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Adds [`IdempotencyService`] around a service.
pub struct IdempotencyLayer<St> {
    pub(super) driver: Arc<Idempotency<St>>,
    pub(super) identify: Arc<dyn IdentityExtractor>,
    pub(super) body_limit: usize,
}

impl<St> Clone for IdempotencyLayer<St> {
    fn clone(&self) -> Self {
        IdempotencyLayer {
            driver: Arc::clone(&self.driver),
            identify: Arc::clone(&self.identify),
            body_limit: self.body_limit,
        }
    }
}

impl<St: fmt::Debug> fmt::Debug for IdempotencyLayer<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("driver", &self.driver)
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

impl<St> IdempotencyLayer<St> {
    /// Runs requests through `driver`, scoped by what `identify` says of each.
    pub fn new(driver: Arc<Idempotency<St>>, identify: impl IdentityExtractor) -> Self {
        IdempotencyLayer {
            driver,
            identify: Arc::new(identify),
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }

    /// The largest request body accepted (larger: 413).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }
}

impl<S, St> Layer<S> for IdempotencyLayer<St> {
    type Service = IdempotencyService<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService {
            inner,
            layer: self.clone(),
        }
    }
}
