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
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

mod canonical;
pub mod clock;
pub mod driver;
mod error;
pub mod fingerprint;
pub mod key;
#[cfg(feature = "memory")]
pub mod memory;
pub mod poll;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
mod scope;
pub mod store;
pub mod telemetry;

pub use driver::{HandlerResult, Idempotency, IdempotencyConfig, Outcome};
pub use error::{BoxError, Error};
pub use key::{IdempotencyKey, KeyError};
pub use scope::Scope;

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
