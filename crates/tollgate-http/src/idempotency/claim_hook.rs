//! [`ClaimHook`]: claim a key never seen in the same statement as the handler's first write.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tollgate_idempotency::fingerprint::Fingerprint;
use tollgate_idempotency::store::{ClaimOptions, Lease};
use tollgate_idempotency::{Error, Scope};

use crate::RequestHead;

/// A request whose key the layer is about to claim.
#[derive(Debug)]
#[non_exhaustive]
pub struct ClaimRequest<'a> {
    /// The request's head; its extensions hold what earlier layers learned (the caller).
    pub head: RequestHead<'a>,
    /// The whole body, already read.
    pub body: &'a Bytes,
    /// The record's scope.
    pub scope: &'a Scope,
    /// The request's fingerprint.
    pub fingerprint: &'a Fingerprint,
    /// The lease and retention the layer's driver claims with.
    pub options: ClaimOptions,
}

/// A key the hook claimed.
#[derive(Debug)]
pub struct Claimed {
    /// The lease its claim granted (`resumed: false`).
    pub lease: Lease,
    /// Added to the request the inner service receives: what the hook wrote, so the handler
    /// does not write it again.
    pub extensions: http::Extensions,
}

/// The future a [`ClaimHook`] returns.
pub type ClaimFuture = Pin<Box<dyn Future<Output = Result<Option<Claimed>, Error>> + Send>>;

/// Claims a key never seen together with the handler's own first write, so the two commit as
/// one (`PostgresStore::claim_statement` composed with the handler's insert): one commit per
/// request fewer than claiming first and writing after.
///
/// The layer asks the hook before its usual claim. `Ok(Some(_))`: the hook claimed the key and
/// the inner service runs under its lease. `Ok(None)`: nothing was written (the key has a
/// record, or the hook declines this request, e.g. an invalid body) and the layer claims as
/// usual — replay, wait, mismatch or takeover. `Err`: the layer answers as for a failed claim.
/// Whatever the hook wrote under the lease must be something the inner service accepts finding
/// (it is told through [`Claimed::extensions`]); the record is completed or released by the
/// inner service's [`Disposition`](super::Disposition) as usual.
pub trait ClaimHook: Send + Sync + 'static {
    /// Claims `request`'s key with the handler's first write, or declines.
    fn claim(&self, request: ClaimRequest<'_>) -> ClaimFuture;
}

impl<H: ClaimHook + ?Sized> ClaimHook for Arc<H> {
    fn claim(&self, request: ClaimRequest<'_>) -> ClaimFuture {
        (**self).claim(request)
    }
}

/// A hook as the layer keeps it.
#[derive(Clone)]
pub(super) struct SharedHook(pub(super) Arc<dyn ClaimHook>);

impl fmt::Debug for SharedHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClaimHook")
    }
}
