//! Client- and server-side retry policy: backoff with jitter, `Retry-After`, retry budgets and a
//! circuit breaker, all on an injectable clock and a seedable RNG.
//!
//! **Status: planned (issue #4).** This crate will hold, per `DESIGN.md`:
//! - backoff (constant, exponential) with none / full / equal / decorrelated jitter, capped
//!   *after* jitter, with max attempts and max elapsed time;
//! - `Retry-After` parsing (delta seconds and HTTP-date), clamped, taking precedence;
//! - classification of retryable outcomes (408, 429, 5xx, 409 for an in-progress idempotency
//!   key) and the rule that a POST is retried only with the same `Idempotency-Key`;
//! - a retry budget (AWS / gRPC style token bucket) and a circuit breaker (closed / open /
//!   half-open, failure-rate and slow-call thresholds);
//! - `RetryConfig`, exactly what `GET /api/v1/retry-config` publishes, an async driver and a
//!   tower layer.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The crate's error type; variants arrive with the implementation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {}
