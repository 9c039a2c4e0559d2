//! Tollgate keeps payment APIs correct under retries, duplicates and overload.
//!
//! This facade re-exports the workspace's library crates behind features; each crate can also be
//! used alone.
//!
//! | feature | crate | what |
//! |---|---|---|
//! | `ratelimit` (default) | [`ratelimit`] | sliding window, sliding log, GCRA; memory backend |
//! | `redis` | [`ratelimit::redis`] | the Redis rate-limit backend and idempotency store |
//! | `cluster` | [`ratelimit::redis`] | both on a Redis Cluster too (a decision split per hash slot) |
//! | `idempotency` | `idempotency` | `Idempotency-Key`, fingerprints, fenced stores, driver |
//! | `retry` | `retry` | backoff and jitter, Retry-After, budgets, circuit breaker, driver |
//! | `audit` | `audit` | audit events; memory, JSON lines sinks |
//! | `postgres` | `audit::postgres` | the PostgreSQL audit log and idempotency store |
//! | `reqwest` | `reqwest` | reqwest middleware: an `Idempotency-Key` on every payment, safe retries, budget, breaker per host |
//! | `telemetry` | — | `tracing` spans and events and `metrics` series from every library enabled beside it |
//! | `http` | `http` | problem+json, client IP; with `ratelimit` its rate-limit tower layer, with `idempotency` its idempotency layer |
//!
//! # Example
//!
//! ```
//! use tollgate::ratelimit::{MemoryLimiter, PolicySet, RequestContext};
//!
//! let policies = PolicySet::defaults();
//! let limiter = MemoryLimiter::new();
//! let keys = policies.keys_for(&RequestContext::new().user("alice"));
//! assert!(limiter.check_now(&keys, 1)?.is_allowed());
//! # Ok::<(), tollgate::ratelimit::Error>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "audit")]
pub use tollgate_audit as audit;
#[cfg(feature = "http")]
pub use tollgate_http as http;
#[cfg(feature = "idempotency")]
pub use tollgate_idempotency as idempotency;
#[cfg(feature = "ratelimit")]
pub use tollgate_ratelimit as ratelimit;
#[cfg(feature = "reqwest")]
pub use tollgate_reqwest as reqwest;
#[cfg(feature = "retry")]
pub use tollgate_retry as retry;
