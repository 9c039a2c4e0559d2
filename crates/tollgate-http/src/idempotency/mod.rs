//! A tower middleware that makes a route idempotent with an [`Idempotency`] driver.
//!
//! For each request: parse the `Idempotency-Key` (400 if missing, repeated or malformed), read
//! the body (413 past the limit), fingerprint method + route + canonical JSON body (400 if not
//! JSON), then let the driver decide: run the inner service once and store its response, replay
//! a stored one, wait for a duplicate in flight, or answer 409 (with `Retry-After`) or 422. Every
//! answer carries `Idempotent-Replayed: true|false`; replays repeat the stored status, body,
//! `Content-Type` and `Location`.
//!
//! Each of those is a setting of [`IdempotencyLayer`]: which keys are accepted
//! ([`key_policy`](IdempotencyLayer::key_policy), e.g. Stripe's printable-ASCII keys), how
//! bodies are fingerprinted ([`body_format`](IdempotencyLayer::body_format): JSON, form-encoded,
//! bytes, or by `Content-Type`), and which headers replay
//! ([`replay_headers`](IdempotencyLayer::replay_headers)).
//!
//! What is stored: 2xx and 4xx responses of the inner service (terminal outcomes, a declined card
//! included); a 5xx means the side effect may have started, so the record is kept for the next
//! request to resume (the inner service finds the [`Lease`] and the [`Scope`] in the request's
//! extensions and can reconcile before acting). Requests the layer refuses before the inner
//! service store nothing. The inner service can override the choice by putting a
//! [`Disposition`] in its response's extensions: `Forget` for a validation error found only
//! inside the handler, `Completed` when it completed the record in its own database transaction.
//!
//! What the layer did travels back as a typed [`IdempotencyOutcome`] in the response's
//! extensions — executed, replayed, in-flight conflict, mismatch, … — so metrics and audit code
//! never parse `Idempotent-Replayed` or guess from a status code. An executed answer keeps every
//! header and extension the inner service set.
//!
//! Which requests are made idempotent, and for whom, comes from an [`IdentityExtractor`] (any
//! `Fn(&RequestHead) -> Option<Identity>`); `None` passes the request through untouched: its
//! body is not read, the inner service gets it as it comes (a [`RequestBody`] either way).
//!
//! [`Idempotency`]: tollgate_idempotency::Idempotency
//! [`Lease`]: tollgate_idempotency::store::Lease
//! [`Scope`]: tollgate_idempotency::Scope
//! [`RequestHead`]: crate::RequestHead
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tollgate_http::idempotency::{IdempotencyLayer, IdempotencyOutcome, Identity, RequestBody};
//! use tollgate_http::RequestHead;
//! use tollgate_idempotency::memory::MemoryStore;
//! use tollgate_idempotency::{Idempotency, IdempotencyConfig};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! let charges = Arc::new(AtomicU32::new(0));
//! let counter = Arc::clone(&charges);
//! let pay = service_fn(move |_req: Request<RequestBody>| {
//!     let n = counter.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         let mut response = Response::new(Full::new(Bytes::from(format!("txn_{n}"))));
//!         *response.status_mut() = StatusCode::CREATED;
//!         Ok::<_, std::convert::Infallible>(response)
//!     }
//! });
//! let driver = Arc::new(Idempotency::new(MemoryStore::new(10_000), IdempotencyConfig::default()));
//! let layer = IdempotencyLayer::new(driver, |_req: &RequestHead<'_>| {
//!     Some(Identity::new("alice", "/api/v1/payments"))
//! });
//! let service = layer.layer(pay);
//!
//! let request = || {
//!     Request::post("/api/v1/payments")
//!         .header("idempotency-key", "order-7c1f0e9a2b4d4e11")
//!         .body(Full::new(Bytes::from_static(br#"{"amount":"9.99"}"#)))
//!         .unwrap()
//! };
//! let first = service.clone().oneshot(request()).await.unwrap();
//! let again = service.clone().oneshot(request()).await.unwrap();
//! assert_eq!((first.status(), again.status()), (StatusCode::CREATED, StatusCode::CREATED));
//! assert_eq!(first.headers()["idempotent-replayed"], "false");
//! assert_eq!(again.extensions().get(), Some(&IdempotencyOutcome::Replayed));
//! assert_eq!(charges.load(Ordering::SeqCst), 1);
//! # });
//! ```

mod body;
mod claim_hook;
mod identity;
mod layer;
mod outcome;
mod response;
mod service;

pub use crate::future::ResponseFuture;
pub use body::{BoxError, RequestBody};
pub use claim_hook::{ClaimFuture, ClaimHook, ClaimRequest, Claimed};
pub use identity::{Identity, IdentityExtractor};
pub use layer::{DEFAULT_BODY_LIMIT, IdempotencyLayer};
pub use outcome::{Disposition, IdempotencyOutcome, StoreFailure};
pub use response::{IDEMPOTENT_REPLAYED, kept_headers};
pub use service::IdempotencyService;
