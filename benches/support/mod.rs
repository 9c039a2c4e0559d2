//! What the benches and the ratio gate set up alike: the GCRA policy and governor quota that
//! always admit, user keys, the two kinds of Redis connection, a short per-element group, and
//! polling a future that never waits.

#![allow(dead_code)] // each bench uses its part

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use tollgate_ratelimit::{Algorithm, Policy, PolicyKey, Scope};

/// A group reporting elements (decisions, events) per second: 20 samples of 3 s after 1 s of
/// warm-up.
pub(crate) fn per_element_group(c: &mut Criterion, name: String) -> BenchmarkGroup<'_, WallTime> {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group
}

/// Polls a future that is ready at once (the memory backends never wait) without a runtime.
pub(crate) fn poll_ready<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => unreachable!("an in-memory backend never waits"),
    }
}

/// A GCRA policy admitting `rate` a second with a burst of `rate`: every decision admits.
pub(crate) fn always_admits(rate: u32) -> Arc<Policy> {
    let rate = u64::from(rate);
    Arc::new(
        Policy::new(
            "p",
            Scope::User,
            Algorithm::token_bucket(rate, Duration::from_secs(1), rate),
        )
        .expect("valid policy"),
    )
}

/// governor's twin of [`always_admits`].
pub(crate) fn governor_quota(rate: u32) -> governor::Quota {
    let rate = NonZeroU32::new(rate).expect("non-zero");
    governor::Quota::per_second(rate).allow_burst(rate)
}

/// `user-0` … `user-{n-1}` under `policy`, one key per decision.
pub(crate) fn user_keys(policy: &Arc<Policy>, n: usize) -> Vec<[PolicyKey; 1]> {
    (0..n)
        .map(|i| [PolicyKey::new(Arc::clone(policy), &format!("user-{i}"))])
        .collect()
}

/// The Redis benches' runtime: two workers, as many as the machine has cores.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A deadpool-redis pool of `size` connections to `url`.
pub(crate) fn redis_pool(url: &str, size: usize) -> deadpool_redis::Pool {
    let mut config = deadpool_redis::Config::from_url(url);
    config.pool = Some(deadpool_redis::PoolConfig::new(size));
    config
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .expect("valid url")
}

/// One multiplexed, self-reconnecting connection to `url`.
pub(crate) async fn multiplexed(url: &str) -> redis::aio::ConnectionManager {
    let client = redis::Client::open(url).expect("valid url");
    redis::aio::ConnectionManager::new(client)
        .await
        .expect("redis reachable")
}

/// A connection the Redis benches compare: a pool, or one multiplexed connection.
#[derive(Clone)]
pub(crate) enum Raw {
    Pool(deadpool_redis::Pool),
    Multiplexed(redis::aio::ConnectionManager),
}

/// `return 1`, loaded: the floor of one round trip, as `EVALSHA` of its sha.
pub(crate) async fn load_noop(connection: &Raw) -> String {
    let load = redis::cmd("SCRIPT").arg("LOAD").arg("return 1").clone();
    match connection {
        Raw::Pool(pool) => {
            let mut conn = pool.get().await.expect("redis reachable");
            load.query_async(&mut *conn).await.expect("load")
        }
        Raw::Multiplexed(manager) => load.query_async(&mut manager.clone()).await.expect("load"),
    }
}

/// One `EVALSHA` of the no-op script on `connection`.
pub(crate) async fn noop(connection: &Raw, sha: &str) {
    let call = redis::cmd("EVALSHA").arg(sha).arg(0).clone();
    let _: i64 = match connection {
        Raw::Pool(pool) => {
            let mut conn = pool.get().await.expect("redis");
            call.query_async(&mut *conn).await
        }
        Raw::Multiplexed(manager) => call.query_async(&mut manager.clone()).await,
    }
    .expect("evalsha");
}

/// A limiter on `connection` that returns Redis's errors (a bench must not measure a fallback).
pub(crate) fn bench_limiter(
    connection: impl Into<tollgate_ratelimit::redis::RedisConnection>,
    prefix: &str,
) -> tollgate_ratelimit::redis::RedisLimiter {
    tollgate_ratelimit::redis::RedisLimiter::builder(connection)
        .key_prefix(prefix)
        .failure_mode(tollgate_ratelimit::redis::FailureMode::ReturnError)
        .timeout(Duration::from_secs(5))
        .build()
}
