//! HTTP glue any hyper, tower or axum service can embed.
//!
//! - [`problem`]: RFC 9457 `application/problem+json` responses.
//! - [`client_ip`]: the client address behind trusted reverse proxies.
//! - [`content_type`]: `415` for anything but JSON.
//! - [`retry_after`]: the one rounding of every `Retry-After` (up, at least a second).
//! - [`ratelimit`]: a tower layer that rate limits with any `tollgate_ratelimit::RateLimiter`,
//!   sets the rate-limit headers on every response and answers `429` with `Retry-After`.
//! - [`idempotency`]: a tower layer that runs a route through a `tollgate_idempotency` driver:
//!   `Idempotency-Key` (400), body limit (413), fingerprint (422 on reuse), replay with
//!   `Idempotent-Replayed`, 409 with `Retry-After` for a duplicate in flight.
//!
//! Each middleware is a module with its layer, service and future, in the manner of tower-http,
//! and each layer is a feature (`ratelimit`, `idempotency`; both by default), so a service that
//! embeds one does not build the other's crate.
//! What the layers decide travels back as typed response extensions
//! ([`ratelimit::RateLimited`], [`idempotency::IdempotencyOutcome`]), and what they key on comes
//! from extractors over a [`RequestHead`], so no layer is generic over the request body. They
//! work the same under plain hyper, tower and axum (`Router::route_layer`).

//!
//! # Example
//!
//! ```
//! use http::StatusCode;
//! use tollgate_http::problem::Problem;
//!
//! let response = Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type")
//!     .detail("send application/json")
//!     .into_response();
//! assert_eq!(response.status(), 415);
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

pub mod client_ip;
pub mod content_type;
mod error;
#[cfg(any(feature = "ratelimit", feature = "idempotency"))]
mod future;
#[cfg(feature = "idempotency")]
#[cfg_attr(docsrs, doc(cfg(feature = "idempotency")))]
pub mod idempotency;
pub mod problem;
#[cfg(feature = "ratelimit")]
#[cfg_attr(docsrs, doc(cfg(feature = "ratelimit")))]
pub mod ratelimit;
mod request_head;
pub mod retry_after;

pub use error::error_chain;
pub use request_head::RequestHead;

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
