//! Exactly-once payments under retries, duplicates and races: the `Idempotency-Key` crate
//! (draft-ietf-httpapi-idempotency-key-header, Stripe-compatible).
//!
//! - [`key`]: one `Idempotency-Key` value, 16–255 characters of `[A-Za-z0-9_-]`, bare or an
//!   RFC 8941 sf-string; missing, repeated or malformed → `400`.
//! - [`Scope`]: (user, method + route, key). Different users never see or block each other.
//! - [`fingerprint`]: blake3 over method, route and canonical JSON; same key, different
//!   fingerprint → `422`.
//! - [`store::IdempotencyStore`]: claim / complete / release, each a compare-and-set on a fencing
//!   token; [`memory::MemoryStore`], and behind features `postgres::PostgresStore` and
//!   `redis::RedisStore`.
//! - [`driver::Idempotency`]: claim → run the handler once → complete; replay a stored result;
//!   wait (bounded, polled with jittered backoff) for a duplicate in flight, then `409`.
//!
//! # What is stored, what is forgotten
//!
//! | the handler's outcome | stored? | what a retry with the same key gets |
//! |---|---|---|
//! | 2xx, or a business 4xx such as a declined card ([`HandlerResult::Store`]) | yes, for the TTL (24 h) | the same status, headers and body, `Idempotent-Replayed: true` |
//! | rejected before any side effect: auth, validation, rate limit ([`HandlerResult::Forget`]) — or never reaching the driver | no | a fresh execution |
//! | failed after the side effect may have started ([`HandlerResult::Ambiguous`]) | the claim is kept, the lease ended | a resumed execution ([`store::Lease::resumed`]): reconcile with the processor, never charge twice |
//! | the owner crashed | the claim is kept until its lease expires | after the lease: a resumed execution |
//!
//! An owner whose lease expired and was taken over cannot store its late result: the store
//! answers [`Error::Fenced`], so the newer owner's answer stands.
//!
//! # Failure cases
//!
//! | what happens | what the caller gets |
//! |---|---|
//! | the store is unreachable before the claim | [`Error::Store`] (`transient`, 503): nothing ran |
//! | the store fails after the handler ran | [`Error::Store`]: the record stays in progress; a retry after the lease resumes it ([`store::Lease::resumed`]) |
//! | the process dies while the handler runs | the lease expires; the next request resumes |
//! | a duplicate arrives while the first runs | it waits up to [`IdempotencyConfig::wait`], then replays or gets [`Error::Conflict`] (409 + `Retry-After`) |
//! | the same key with a different body | [`Error::Mismatch`] (422) |
//! | the TTL passed | the key reads as absent, before any cleanup; the request runs afresh |
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use bytes::Bytes;
//! use http::Method;
//! use tollgate_idempotency::driver::{HandlerResult, Idempotency, IdempotencyConfig, Outcome};
//! use tollgate_idempotency::fingerprint::Fingerprint;
//! use tollgate_idempotency::key::IdempotencyKey;
//! use tollgate_idempotency::memory::MemoryStore;
//! use tollgate_idempotency::store::StoredResponse;
//! use tollgate_idempotency::Scope;
//!
//! let idempotency = Idempotency::new(MemoryStore::new(100_000), IdempotencyConfig::default());
//! let key = IdempotencyKey::parse("order-7c1f0e9a2b4d4e11")?;
//! let scope = Scope::new("alice", &Method::POST, "/api/v1/payments", key);
//! let body = br#"{"amount":"99.99","currency":"USD"}"#;
//! let fingerprint = Fingerprint::of_json(&Method::POST, "/api/v1/payments", body)?;
//!
//! let charge = |_lease| async {
//!     HandlerResult::Store(StoredResponse { status: 201, headers: vec![], body: Bytes::from("txn_1") })
//! };
//! let first = idempotency.run(&scope, &fingerprint, charge).await?;
//! let again = idempotency.run(&scope, &fingerprint, |_| async { unreachable!("charged twice") }).await?;
//! assert!(matches!(first, Outcome::Executed(_)));
//! assert!(matches!(again, Outcome::Replayed(ref r) if r.body == "txn_1"));
//! # Ok::<(), tollgate_idempotency::Error>(())
//! # }).unwrap();
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod driver;
pub mod fingerprint;
pub mod key;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
pub mod store;

use std::time::Duration;

use http::Method;

pub use driver::{HandlerResult, Idempotency, IdempotencyConfig, Outcome};
pub use key::{IdempotencyKey, KeyError};

/// Where a key is unique: one user, one operation (method and route template), one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    user: String,
    operation: String,
    key: IdempotencyKey,
}

impl Scope {
    /// The scope of `key` for `user` on `method route` (use the route template, not the path).
    pub fn new(user: impl Into<String>, method: &Method, route: &str, key: IdempotencyKey) -> Self {
        Scope {
            user: user.into(),
            operation: format!("{method} {route}"),
            key,
        }
    }

    /// The user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// `METHOD /route`.
    pub fn operation(&self) -> &str {
        &self.operation
    }

    /// The key.
    pub fn key(&self) -> &IdempotencyKey {
        &self.key
    }
}

/// Everything that can go wrong in this crate, with the HTTP status each maps to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `Idempotency-Key` header is missing, repeated or malformed (400).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The body is not JSON (400).
    #[error("the request body is not valid JSON: {0}")]
    InvalidBody(String),
    /// The key was used with a different request (422).
    #[error("the Idempotency-Key was already used with a different request")]
    Mismatch,
    /// A request with the key is still in progress (409 with `Retry-After`).
    #[error("a request with this Idempotency-Key is in progress")]
    Conflict {
        /// When the other request's lease ends at the latest.
        retry_after: Duration,
    },
    /// This owner's lease was taken over; its result was not stored (409: the key now belongs to
    /// the newer owner, whose result a retry replays).
    #[error("the idempotency lease was taken over by a newer owner")]
    Fenced,
    /// The store failed (503: retry with the same key — if the handler had already run, the
    /// record is still claimed and the retry resumes it once the lease ends, never twice).
    #[error("idempotency store error: {message}")]
    Store {
        /// What failed.
        message: String,
        /// Whether retrying may help.
        transient: bool,
    },
}

impl Error {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            Error::Key(_) | Error::InvalidBody(_) => 400,
            Error::Mismatch => 422,
            Error::Conflict { .. } | Error::Fenced => 409,
            Error::Store { .. } => 503,
        }
    }

    /// Whether the same request may succeed later (409, or a store outage).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Conflict { .. }
                | Error::Store {
                    transient: true,
                    ..
                }
        )
    }

    /// When to retry: the other owner's lease for [`Error::Conflict`], a second for a lost
    /// lease or a store outage, nothing for errors a retry cannot fix.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Conflict { retry_after } => Some(*retry_after),
            Error::Fenced | Error::Store { .. } => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}
