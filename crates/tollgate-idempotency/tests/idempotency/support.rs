use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use tollgate_idempotency::clock::ManualClock;
use tollgate_idempotency::fingerprint::Fingerprint;
use tollgate_idempotency::memory::MemoryStore;
use tollgate_idempotency::store::{ClaimOptions, StoredResponse};
use tollgate_idempotency::{IdempotencyKey, Scope};

pub(crate) const ROUTE: &str = "/api/v1/payments";

pub(crate) fn scope(user: &str, key: &str) -> Scope {
    Scope::new(
        user,
        &Method::POST,
        ROUTE,
        IdempotencyKey::parse(key).expect("valid key"),
    )
}

pub(crate) fn fingerprint(body: &str) -> Fingerprint {
    Fingerprint::of_json(&Method::POST, ROUTE, body.as_bytes()).expect("json")
}

pub(crate) fn response(body: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("location".to_owned(), format!("/api/v1/payments/{body}")),
        ],
        body: Bytes::from(body.to_owned()),
    }
}

pub(crate) const OPTIONS: ClaimOptions =
    ClaimOptions::new(Duration::from_secs(30), Duration::from_secs(24 * 3600));

pub(crate) fn memory_store(clock: &ManualClock) -> MemoryStore {
    MemoryStore::with_clock(100_000, Arc::new(clock.clone()))
}

#[cfg(feature = "postgres")]
pub(crate) mod pg {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tollgate_idempotency::clock::ManualClock;
    use tollgate_idempotency::postgres::PostgresStore;
    use tollgate_idempotency::postgres::deadpool_postgres::{Config, Pool, Runtime};
    use tollgate_idempotency::postgres::tokio_postgres::NoTls;

    /// `TEST_DATABASE_URL` and a schema of this test's own, or `None` after saying it skipped.
    pub(crate) fn database(test: &str) -> Option<(String, String)> {
        let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: needs PostgreSQL; set TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres to run it"
            );
            return None;
        };
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Some((
            url,
            format!("tollgate_idem_{}_{nanos}_{n}", std::process::id()),
        ))
    }

    pub(crate) fn pool(url: &str) -> Pool {
        let mut config = Config::new();
        config.url = Some(url.to_owned());
        config
            .create_pool(Some(Runtime::Tokio1), NoTls)
            .expect("a valid url")
    }

    pub(crate) async fn store(
        url: &str,
        schema: &str,
        clock: Option<&ManualClock>,
    ) -> PostgresStore {
        let store = PostgresStore::start(pool(url), schema)
            .await
            .expect("TEST_DATABASE_URL is set but the store could not start");
        match clock {
            Some(clock) => store.with_clock(Arc::new(clock.clone())),
            None => store,
        }
    }

    pub(crate) async fn drop_schema(url: &str, schema: &str) {
        let client = pool(url).get().await.expect("database");
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .expect("drop schema");
    }
}

#[cfg(feature = "redis")]
pub(crate) mod rd {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tollgate_idempotency::clock::ManualClock;
    use tollgate_idempotency::redis::RedisStore;
    use tollgate_idempotency::redis::deadpool_redis::{Config, Pool, Runtime};

    /// `TEST_REDIS_URL` and a key prefix of this test's own, or `None` after saying it skipped.
    pub(crate) fn redis(test: &str) -> Option<(String, String)> {
        let Ok(url) = std::env::var("TEST_REDIS_URL") else {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: needs Redis; set TEST_REDIS_URL=redis://127.0.0.1:6379 to run it"
            );
            return None;
        };
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Some((
            url,
            format!("tollgate-idem-test:{}:{nanos}:{n}:", std::process::id()),
        ))
    }

    pub(crate) fn pool(url: &str) -> Pool {
        Config::from_url(url)
            .create_pool(Some(Runtime::Tokio1))
            .expect("a valid url")
    }

    pub(crate) fn store(url: &str, prefix: &str, clock: Option<&ManualClock>) -> RedisStore {
        let store = RedisStore::new(pool(url), prefix);
        match clock {
            Some(clock) => store.with_clock(Arc::new(clock.clone())),
            None => store,
        }
    }

    /// [`store`] on one multiplexed connection instead of a pool.
    pub(crate) async fn multiplexed_store(
        url: &str,
        prefix: &str,
        clock: Option<&ManualClock>,
    ) -> RedisStore {
        let client = redis::Client::open(url).expect("a valid url");
        let connection = redis::aio::ConnectionManager::new(client)
            .await
            .expect("TEST_REDIS_URL is set but Redis is unreachable");
        let store = RedisStore::new(connection, prefix);
        match clock {
            Some(clock) => store.with_clock(Arc::new(clock.clone())),
            None => store,
        }
    }

    /// `TEST_REDIS_CLUSTER_URLS` (seed nodes) and a key prefix of this test's own, or `None`
    /// after saying it skipped.
    #[cfg(feature = "cluster")]
    pub(crate) fn cluster(test: &str) -> Option<(Vec<String>, String)> {
        let Ok(urls) = std::env::var("TEST_REDIS_CLUSTER_URLS") else {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: needs a Redis Cluster; set TEST_REDIS_CLUSTER_URLS=redis://127.0.0.1:7000,redis://127.0.0.1:7001 (.ci/redis-cluster starts one) to run it"
            );
            return None;
        };
        let (_, prefix) = redis(test)?;
        Some((urls.split(',').map(str::to_owned).collect(), prefix))
    }

    /// A connection to the cluster of `urls`.
    #[cfg(feature = "cluster")]
    pub(crate) async fn cluster_connection(
        urls: &[String],
    ) -> redis::cluster_async::ClusterConnection {
        redis::cluster::ClusterClient::new(urls.to_vec())
            .expect("valid cluster urls")
            .get_async_connection()
            .await
            .expect("TEST_REDIS_CLUSTER_URLS is set but the cluster is unreachable")
    }

    /// [`store`] on a Redis Cluster.
    #[cfg(feature = "cluster")]
    pub(crate) async fn cluster_store(
        urls: &[String],
        prefix: &str,
        clock: Option<&ManualClock>,
    ) -> RedisStore {
        let store = RedisStore::new(cluster_connection(urls).await, prefix);
        match clock {
            Some(clock) => store.with_clock(Arc::new(clock.clone())),
            None => store,
        }
    }

    /// [`drop_prefix`] on a Redis Cluster (`KEYS` asks every primary, `DEL` is split per slot).
    #[cfg(feature = "cluster")]
    pub(crate) async fn drop_cluster_prefix(urls: &[String], prefix: &str) {
        let mut conn = cluster_connection(urls).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .expect("keys");
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut conn)
                .await
                .expect("del");
        }
    }

    /// Deletes the test's keys (records live 24 h otherwise).
    pub(crate) async fn drop_prefix(url: &str, prefix: &str) {
        let mut conn = pool(url)
            .get()
            .await
            .expect("TEST_REDIS_URL is set but Redis is unreachable");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut *conn)
            .await
            .expect("keys");
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut *conn)
                .await
                .expect("del");
        }
    }
}
