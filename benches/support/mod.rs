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

/// The tiers bench's subjects: `n` users, a quarter on the defaults and a quarter on each of
/// three tiers that re-limit the per-user policy, every decision admitting.
pub(crate) struct Tiers {
    /// The defaults alone: what deciding costs without tiers.
    pub(crate) flat: tollgate_ratelimit::PolicySet,
    /// The same defaults with the three tiers.
    pub(crate) tiered: tollgate_ratelimit::PolicySet,
    pub(crate) names: Vec<String>,
    /// Each subject's tier, as its record (an API key's, say) carries it.
    pub(crate) tier_of: Vec<Option<&'static str>>,
}

impl Tiers {
    pub(crate) fn new(n: usize) -> Self {
        let per_user = |rate: u64| {
            let bucket = Algorithm::token_bucket(rate, Duration::from_secs(1), rate);
            Policy::new("per-user", Scope::User, bucket).expect("valid policy")
        };
        let flat = tollgate_ratelimit::PolicySet::new([per_user(100_000)]).expect("a set");
        let mut tiered = flat.clone();
        for (tier, rate) in [
            ("silver", 200_000),
            ("gold", 300_000),
            ("platinum", 400_000),
        ] {
            tiered = tiered.with_tier(tier, [per_user(rate)]).expect("a tier");
        }
        let tiers = [None, Some("silver"), Some("gold"), Some("platinum")];
        Tiers {
            flat,
            tiered,
            names: (0..n).map(|i| format!("user-{i}")).collect(),
            tier_of: (0..n).map(|i| tiers[i % 4]).collect(),
        }
    }

    /// One decision for subject `i` under `set`, its tier given when `with_tier`: the keys
    /// picked from the set, then decided.
    pub(crate) fn decide(
        &self,
        limiter: &tollgate_ratelimit::MemoryLimiter,
        set: &tollgate_ratelimit::PolicySet,
        i: usize,
        with_tier: bool,
    ) -> bool {
        let mut ctx = tollgate_ratelimit::RequestContext::new().user(&self.names[i]);
        if let (true, Some(tier)) = (with_tier, self.tier_of[i]) {
            ctx = ctx.tier(tier);
        }
        let keys = set.keys_for(&ctx);
        limiter.check_now(&keys, 1).expect("valid").is_allowed()
    }

    /// A limiter holding every subject's key under `set`.
    pub(crate) fn warmed(
        &self,
        set: &tollgate_ratelimit::PolicySet,
        with_tier: bool,
    ) -> tollgate_ratelimit::MemoryLimiter {
        let limiter = tollgate_ratelimit::MemoryLimiter::builder()
            .max_keys(2 * self.names.len())
            .build();
        for i in 0..self.names.len() {
            self.decide(&limiter, set, i, with_tier);
        }
        limiter
    }
}
