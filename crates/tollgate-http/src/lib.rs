//! HTTP glue any hyper, tower or axum service can embed.
//!
//! **Status: planned (issue #5).** This crate will hold, per `DESIGN.md`:
//! - header codecs (`Idempotency-Key`, `Retry-After`, rate-limit headers; the rate-limit header
//!   rendering already lives in `tollgate_ratelimit::headers`);
//! - RFC 9457 `application/problem+json` responses, body-size (413) and content-type (415)
//!   checks;
//! - tower `Layer`s for rate limiting and idempotency.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The crate's error type; variants arrive with the implementation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {}
