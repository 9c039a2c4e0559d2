//! [`IdempotencyLayer`].

use std::fmt;
use std::sync::Arc;

use http::header::{CONTENT_TYPE, HeaderName, LOCATION};
use tollgate_idempotency::Idempotency;
use tollgate_idempotency::fingerprint::BodyFormat;
use tollgate_idempotency::key::KeyPolicy;

use super::claim_hook::{ClaimHook, SharedHook};
use super::identity::IdentityExtractor;

/// The default request-body limit: 64 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Adds [`IdempotencyService`](super::IdempotencyService) around a service.
pub struct IdempotencyLayer<St> {
    pub(super) driver: Arc<Idempotency<St>>,
    pub(super) identify: Arc<dyn IdentityExtractor>,
    pub(super) body_limit: usize,
    pub(super) key_policy: KeyPolicy,
    pub(super) body_format: BodyFormat,
    pub(super) replay_headers: Arc<[HeaderName]>,
    pub(super) claim_hook: Option<SharedHook>,
}

impl<St> Clone for IdempotencyLayer<St> {
    fn clone(&self) -> Self {
        IdempotencyLayer {
            driver: Arc::clone(&self.driver),
            identify: Arc::clone(&self.identify),
            body_limit: self.body_limit,
            key_policy: self.key_policy,
            body_format: self.body_format,
            replay_headers: Arc::clone(&self.replay_headers),
            claim_hook: self.claim_hook.clone(),
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
            key_policy: KeyPolicy::STRICT,
            body_format: BodyFormat::Json,
            replay_headers: Arc::new([CONTENT_TYPE, LOCATION]),
            claim_hook: None,
        }
    }

    /// The largest request body accepted (larger: 413).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Which `Idempotency-Key` values are accepted ([`KeyPolicy::STRICT`] unless set;
    /// [`KeyPolicy::STRIPE`] for clients that send Stripe-style keys).
    pub fn key_policy(mut self, policy: KeyPolicy) -> Self {
        self.key_policy = policy;
        self
    }

    /// How bodies are read for their fingerprint ([`BodyFormat::Json`] unless set; `Form` for
    /// form-encoded APIs, `ByContentType` for routes that take several).
    pub fn body_format(mut self, format: BodyFormat) -> Self {
        self.body_format = format;
        self
    }

    /// The response headers a stored response keeps for its replays (`Content-Type` and
    /// `Location` unless set). Replays always carry `Idempotent-Replayed: true`.
    pub fn replay_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.replay_headers = names.into_iter().collect();
        self
    }
}

impl<St> IdempotencyLayer<St> {
    /// Lets `hook` claim keys never seen together with the handler's first write (one commit
    /// instead of two); see [`ClaimHook`].
    pub fn claim_hook(mut self, hook: impl ClaimHook) -> Self {
        self.claim_hook = Some(SharedHook(Arc::new(hook)));
        self
    }
}
