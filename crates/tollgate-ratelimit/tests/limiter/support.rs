//! Shared helpers: service URLs, isolation, clocks.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tollgate_ratelimit::MemoryLimiter;
use tollgate_ratelimit::clock::{ManualClock, Timestamp};

/// An aligned start (a multiple of every window used in the tests) so results are literal.
pub(crate) const START: Timestamp = Timestamp::from_secs(1_700_000_000);

pub(crate) fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

pub(crate) fn memory(clock: &ManualClock) -> MemoryLimiter<ManualClock> {
    MemoryLimiter::builder().clock(clock.clone()).build()
}

/// `TEST_REDIS_URL`, or `None` after telling the terminal (not the captured output) that `test`
/// was skipped and how to run it.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn redis_url(test: &str) -> Option<String> {
    service("TEST_REDIS_URL", "redis://127.0.0.1:6379", test)
}

/// `TEST_REDIS_CLUSTER_URLS` (comma-separated seed nodes), or `None` after saying so.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) fn redis_cluster_urls(test: &str) -> Option<Vec<String>> {
    let urls = service(
        "TEST_REDIS_CLUSTER_URLS",
        "redis://127.0.0.1:7000,redis://127.0.0.1:7001 (a cluster .ci/redis-cluster starts)",
        test,
    )?;
    Some(urls.split(',').map(str::to_owned).collect())
}

fn service(variable: &str, example: &str, test: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            // Once per test (a property test asks once per case), and to the real stderr on
            // purpose: libtest only captures the print macros.
            static TOLD: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
            let mut told = TOLD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if !told.iter().any(|t| t == test) {
                told.push(test.to_owned());
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED {test}: needs {variable}; set {variable}={example} to run it"
                );
            }
            None
        }
    }
}

/// A key prefix no other test (or test run) shares, so tests run in parallel on one Redis.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn unique_prefix(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("tollgate-test:{test}:{}:{nanos}:{n}:", std::process::id())
}

#[cfg(feature = "redis")]
pub(crate) mod redis {
    use deadpool_redis::{Config, Pool, Runtime};
    use tollgate_ratelimit::clock::ManualClock;
    use tollgate_ratelimit::redis::{FailureMode, RedisConnection, RedisLimiter};

    pub(crate) fn pool(url: &str) -> Pool {
        Config::from_url(url)
            .create_pool(Some(Runtime::Tokio1))
            .expect("a valid redis url")
    }

    /// A limiter on a real Redis with an isolated prefix and the test's clock. Errors are
    /// returned, not hidden: a service test must fail when its service is unreachable.
    pub(crate) fn limiter(url: &str, test: &str, clock: &ManualClock) -> RedisLimiter {
        isolated(pool(url), test, clock)
    }

    /// A limiter on `connection` with `test`'s own prefix and clock, returning Redis's errors.
    fn isolated(
        connection: impl Into<RedisConnection>,
        test: &str,
        clock: &ManualClock,
    ) -> RedisLimiter {
        RedisLimiter::builder(connection)
            .key_prefix(super::unique_prefix(test))
            .clock(clock.clone())
            .failure_mode(FailureMode::ReturnError)
            .timeout(std::time::Duration::from_secs(5))
            .build()
    }

    /// One multiplexed, self-reconnecting connection to the Redis at `url`.
    pub(crate) async fn multiplexed(url: &str) -> redis::aio::ConnectionManager {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(1)))
            .set_number_of_retries(1);
        let client = redis::Client::open(url).expect("a valid redis url");
        redis::aio::ConnectionManager::new_with_config(client, config)
            .await
            .expect("TEST_REDIS_URL is set but Redis is unreachable")
    }

    /// [`limiter`] on one multiplexed connection instead of a pool.
    pub(crate) async fn multiplexed_limiter(
        url: &str,
        test: &str,
        clock: &ManualClock,
    ) -> RedisLimiter {
        isolated(multiplexed(url).await, test, clock)
    }

    /// A connection to the Redis Cluster whose seed nodes are `urls`.
    #[cfg(feature = "cluster")]
    pub(crate) async fn cluster(urls: &[String]) -> redis::cluster_async::ClusterConnection {
        redis::cluster::ClusterClient::new(urls.to_vec())
            .expect("valid cluster urls")
            .get_async_connection()
            .await
            .expect("TEST_REDIS_CLUSTER_URLS is set but the cluster is unreachable")
    }

    /// [`limiter`] on a Redis Cluster.
    #[cfg(feature = "cluster")]
    pub(crate) async fn cluster_limiter(
        urls: &[String],
        test: &str,
        clock: &ManualClock,
    ) -> RedisLimiter {
        isolated(cluster(urls).await, test, clock)
    }
}
