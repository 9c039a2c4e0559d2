//! Integration tests of the rate limiters: one conformance suite run against every backend,
//! property-based models of each algorithm, concurrency and failure behaviour.
//!
//! Redis tests run when `TEST_REDIS_URL` is set (e.g. `redis://127.0.0.1:6379`); without it they
//! print a `SKIPPED` line and pass. When it is set, an unreachable Redis fails them.

mod conformance;
mod model;
mod support;

#[cfg(feature = "redis")]
mod redis_only;
