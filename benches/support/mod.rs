//! What the limiter benches and the ratio gate set up alike: the GCRA policy and governor
//! quota that always admit, user keys, and the two kinds of Redis connection.

#![allow(dead_code)] // each bench uses its part

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tollgate_ratelimit::{Algorithm, Policy, PolicyKey, Scope};

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
