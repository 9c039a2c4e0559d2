//! The PostgreSQL reference: two single-row autocommitted INSERTs per payment.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::args::BoxError;

/// Two single-row autocommitted INSERTs per payment, `concurrency` at a time, for `duration`.
pub(crate) async fn pg_commits(
    url: &str,
    concurrency: usize,
    duration: Duration,
    run: &str,
) -> Result<f64, BoxError> {
    let config: tokio_postgres::Config = url.parse()?;
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(concurrency)
        .build()?;
    let table = format!("{run}_pg_reference");
    pool.get()
        .await?
        .batch_execute(&format!(
            "CREATE TABLE {table} (id text PRIMARY KEY, user_id text NOT NULL, amount_minor bigint NOT NULL, \
             payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        ))
        .await?;
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (pool, table, done) = (pool.clone(), table.clone(), Arc::clone(&done));
        tasks.spawn(async move {
            let Ok(client) = pool.get().await else { return };
            let sql = format!(
                "INSERT INTO {table} (id, user_id, amount_minor, payload) VALUES ($1, $2, $3, $4)"
            );
            let Ok(statement) = client.prepare_cached(&sql).await else {
                return;
            };
            let payload = serde_json::json!({"status": 201, "body": "x".repeat(200)});
            let mut n = 0_u64;
            while Instant::now() < deadline {
                n += 1;
                for part in ["a", "b"] {
                    let id = format!("{worker}-{n}-{part}");
                    if client
                        .execute(&statement, &[&id, &"load-user", &1234_i64, &payload])
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    pool.get()
        .await?
        .batch_execute(&format!("DROP TABLE {table}"))
        .await?;
    Ok(rate)
}

pub(crate) async fn drop_schema(url: &str, schema: &str) {
    if let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await;
    }
}

/// Write transactions started in the cluster of `url` so far: the next transaction id (this
/// query takes one). Exact and immediate, where `pg_stat_database` lags by up to 10 s.
pub(crate) async fn write_transactions(url: &str) -> Result<i64, BoxError> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let row = client.query_one("SELECT txid_current()", &[]).await?;
    Ok(row.get(0))
}
