//! claim + complete per store, and the PostgreSQL path against the plainest equivalent writes
//! (one INSERT and one UPDATE of a single row, autocommit, prepared) through the same pool, in
//! the same run. Each operation uses a fresh idempotency key; `concurrency` tasks run at once.
//!
//! Run: `TEST_REDIS_URL=redis://127.0.0.1:6379 TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!       cargo bench --bench idempotency` (Redis and PostgreSQL parts are skipped with a message
//! when their variable is unset).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hyper::Method;
use tollgate_idempotency::fingerprint::Fingerprint;
use tollgate_idempotency::memory::MemoryStore;
use tollgate_idempotency::postgres::PostgresStore;
use tollgate_idempotency::redis::RedisStore;
use tollgate_idempotency::store::{Claim, ClaimOptions, IdempotencyStore, StoredResponse};
use tollgate_idempotency::{IdempotencyKey, Scope};

const CONCURRENCY: usize = 8;

static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

fn fresh_scope() -> Scope {
    let n = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
    let key =
        IdempotencyKey::parse(&format!("bench-{}-{n:0>12}", std::process::id())).expect("valid");
    Scope::new("bench-user", &Method::POST, "/api/v1/payments", key)
}

fn response() -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![("content-type".into(), "application/json".into())],
        body: Bytes::from_static(br#"{"transaction_id":"txn_0123456789","status":"succeeded"}"#),
    }
}

/// Runs `iters` operations over `CONCURRENCY` tasks; returns the wall time.
async fn split<F, Fut>(iters: u64, op: F) -> Duration
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let per_task = iters.div_ceil(CONCURRENCY as u64);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let op = Arc::clone(&op);
            tokio::spawn(async move {
                for _ in 0..per_task {
                    op().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    started.elapsed()
}

async fn claim_and_complete(store: &dyn IdempotencyStore, fingerprint: &Fingerprint) {
    let scope = fresh_scope();
    let options = ClaimOptions::default();
    let Claim::Acquired(lease) = store
        .claim(&scope, fingerprint, options)
        .await
        .expect("claim")
    else {
        panic!("a fresh key is always acquired");
    };
    store
        .complete(&scope, lease.fence, &response(), options.ttl)
        .await
        .expect("complete");
}

fn bench_store(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: Arc<dyn IdempotencyStore>,
) {
    let fingerprint =
        Fingerprint::of_json(&Method::POST, "/api/v1/payments", br#"{"amount":"1.00"}"#)
            .expect("json");
    let mut group = c.benchmark_group(format!("idempotency/{CONCURRENCY}_concurrent"));
    group.throughput(Throughput::Elements(1));
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    group.bench_function(format!("{name}/claim_complete"), |b| {
        b.to_async(rt).iter_custom(|iters| {
            let store = Arc::clone(&store);
            split(iters, move || {
                let store = Arc::clone(&store);
                async move { claim_and_complete(&*store, &fingerprint).await }
            })
        })
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    bench_store(c, &rt, "memory", Arc::new(MemoryStore::new(10_000_000)));

    match std::env::var("TEST_REDIS_URL") {
        Ok(url) => {
            let mut config = deadpool_redis::Config::from_url(url);
            config.pool = Some(deadpool_redis::PoolConfig::new(CONCURRENCY));
            let pool = config
                .create_pool(Some(deadpool_redis::Runtime::Tokio1))
                .expect("url");
            let prefix = format!("tollgate-bench-idem:{}:", std::process::id());
            bench_store(c, &rt, "redis", Arc::new(RedisStore::new(pool, prefix)));
        }
        Err(_) => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED idempotency/redis: set TEST_REDIS_URL to run it"
            );
        }
    }

    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED idempotency/postgres: set TEST_DATABASE_URL to run it"
        );
        return;
    };
    let mut config = deadpool_postgres::Config::new();
    config.url = Some(url);
    config.pool = Some(deadpool_postgres::PoolConfig::new(CONCURRENCY));
    let pool = config
        .create_pool(
            Some(deadpool_postgres::Runtime::Tokio1),
            tokio_postgres::NoTls,
        )
        .expect("url");
    let schema = format!("tollgate_bench_{}", std::process::id());
    let store = rt
        .block_on(PostgresStore::start(pool.clone(), &schema))
        .expect("migration");
    bench_store(c, &rt, "postgres", Arc::new(store));

    // The peer: the same two writes an application would do without this crate.
    rt.block_on(async {
        let client = pool.get().await.expect("database");
        client
            .batch_execute(&format!(
                "CREATE TABLE {schema}.plain (id text PRIMARY KEY, state text NOT NULL, body bytea)"
            ))
            .await
            .expect("plain table");
    });
    let insert = format!("INSERT INTO {schema}.plain (id, state) VALUES ($1, 'in_progress')");
    let update = format!("UPDATE {schema}.plain SET state = 'completed', body = $2 WHERE id = $1");
    let mut group = c.benchmark_group(format!("idempotency/{CONCURRENCY}_concurrent"));
    group.throughput(Throughput::Elements(1));
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    group.bench_function("postgres/plain_insert_update", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (pool, insert, update) = (pool.clone(), insert.clone(), update.clone());
            split(iters, move || {
                let (pool, insert, update) = (pool.clone(), insert.clone(), update.clone());
                async move {
                    let id = fresh_scope().key().as_str().to_owned();
                    let client = pool.get().await.expect("database");
                    let insert = client.prepare_cached(&insert).await.expect("prepare");
                    let update = client.prepare_cached(&update).await.expect("prepare");
                    client.execute(&insert, &[&id]).await.expect("insert");
                    client
                        .execute(&update, &[&id, &response().body.as_ref()])
                        .await
                        .expect("update");
                }
            })
        })
    });
    group.finish();
    rt.block_on(async {
        let client = pool.get().await.expect("database");
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .expect("drop schema");
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
