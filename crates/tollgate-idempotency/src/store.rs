//! The store seam: one trait, three operations that are each a compare-and-set.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::fingerprint::Fingerprint;
use crate::{Error, Scope};

/// What is kept of a terminal outcome and replayed byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    /// The status code.
    pub status: u16,
    /// The headers that matter on replay (`Content-Type`, `Location`), lower-case names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

/// Ownership of an in-progress record. Every later transition must present its fence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Strictly increasing per record: a newer owner always holds a larger fence.
    pub fence: u64,
    /// The previous owner's lease expired or it reported an ambiguous failure: the side effect
    /// may already have happened, so the handler must reconcile before acting again.
    pub resumed: bool,
}

/// The answer to a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The caller owns the record now and must complete or release it.
    Acquired(Lease),
    /// Another owner holds a live lease; it expires in `retry_after` at the latest.
    InProgress {
        /// Time left on the other owner's lease.
        retry_after: Duration,
    },
    /// Already done: replay this.
    Completed(StoredResponse),
    /// The key was used with a different request.
    Mismatch,
}

/// How an owner gives a record back without completing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Nothing happened (rejected before any side effect): forget the record entirely.
    NothingHappened,
    /// The side effect may have happened: keep the record, end the lease now, and let the next
    /// claim resume it (with [`Lease::resumed`] set) instead of starting over.
    Ambiguous,
}

/// Lease and retention of a claim: `ClaimOptions::new(lease, ttl)` or the default; new
/// settings can come without breaking your code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClaimOptions {
    /// How long an owner may hold a record before another caller may take it over.
    pub lease: Duration,
    /// How long a record (in progress or completed) is kept; it reads as absent afterwards.
    pub ttl: Duration,
}

impl ClaimOptions {
    /// A lease of `lease` and retention of `ttl`.
    pub const fn new(lease: Duration, ttl: Duration) -> Self {
        ClaimOptions { lease, ttl }
    }
}

impl Default for ClaimOptions {
    /// A 30 s lease and 24 h retention.
    fn default() -> Self {
        ClaimOptions {
            lease: Duration::from_secs(30),
            ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Where idempotency records live. Every method is atomic; `complete` and `release` succeed only
/// for the current owner's fence ([`Error::Fenced`] otherwise), so an owner whose lease expired
/// cannot overwrite the result of the owner that took over. Time (lease and expiry) is the
/// store's own clock.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + std::fmt::Debug {
    /// Claims `scope` for a request with `fingerprint`.
    async fn claim(
        &self,
        scope: &Scope,
        fingerprint: &Fingerprint,
        options: ClaimOptions,
    ) -> Result<Claim, Error>;

    /// Stores the terminal response and ends the lease; kept for `ttl` from now.
    async fn complete(
        &self,
        scope: &Scope,
        fence: u64,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), Error>;

    /// Gives the record back without a result.
    async fn release(&self, scope: &Scope, fence: u64, how: Release) -> Result<(), Error>;

    /// Deletes up to `max` expired records; returns how many.
    async fn cleanup(&self, max: usize) -> Result<usize, Error>;

    /// The store's name in telemetry (features `tracing` and `metrics`): `memory`, `redis`,
    /// `postgresql`, or `custom` unless a store of your own names itself.
    fn backend(&self) -> &'static str {
        "custom"
    }
}

/// An `Arc` of a store is a store: a server can choose its backend at start-up and hold
/// `Arc<dyn IdempotencyStore>`.
#[async_trait]
impl<T: IdempotencyStore + ?Sized> IdempotencyStore for std::sync::Arc<T> {
    async fn claim(
        &self,
        scope: &Scope,
        fingerprint: &Fingerprint,
        options: ClaimOptions,
    ) -> Result<Claim, Error> {
        (**self).claim(scope, fingerprint, options).await
    }

    async fn complete(
        &self,
        scope: &Scope,
        fence: u64,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), Error> {
        (**self).complete(scope, fence, response, ttl).await
    }

    async fn release(&self, scope: &Scope, fence: u64, how: Release) -> Result<(), Error> {
        (**self).release(scope, fence, how).await
    }

    async fn cleanup(&self, max: usize) -> Result<usize, Error> {
        (**self).cleanup(max).await
    }

    fn backend(&self) -> &'static str {
        (**self).backend()
    }
}
