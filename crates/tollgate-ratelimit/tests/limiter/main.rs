//! Integration tests of the rate limiters: one conformance suite run against every backend,
//! property-based models of each algorithm, concurrency and failure behaviour.
//!
//! Redis tests run when `TEST_REDIS_URL` is set (e.g. `redis://127.0.0.1:6379`), Redis Cluster
//! tests when `TEST_REDIS_CLUSTER_URLS` is (seed nodes, comma-separated; `.ci/redis-cluster`
//! starts one); without them they print a `SKIPPED` line and pass. When set, an unreachable
//! service fails them.

mod conformance;
mod model;
mod support;

#[cfg(feature = "cluster")]
mod cluster_only;
#[cfg(feature = "redis")]
mod redis_only;
