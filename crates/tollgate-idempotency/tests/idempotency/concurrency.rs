//! 100 tasks race one key through the driver: the handler runs exactly once, and every caller
//! sees that one result (or, with a short wait bound, a 409 conflict).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tollgate_idempotency::Error;
use tollgate_idempotency::driver::{HandlerResult, Idempotency, IdempotencyConfig, Outcome};
use tollgate_idempotency::memory::MemoryStore;
use tollgate_idempotency::store::IdempotencyStore;

use crate::support::{fingerprint, response, scope};

/// 100 tasks race one key, alternating between `drivers` (two pools act as two processes);
/// the handler takes `handler_time`. Returns how often it ran and what each caller got.
async fn race<S: IdempotencyStore + 'static>(
    drivers: [Arc<Idempotency<S>>; 2],
    handler_time: Duration,
) -> (u32, Vec<Result<Outcome, Error>>) {
    let executions = Arc::new(AtomicU32::new(0));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let driver = Arc::clone(&drivers[i % 2]);
            let executions = Arc::clone(&executions);
            tokio::spawn(async move {
                let scope = scope("alice", "race-key-0123456789");
                let fp = fingerprint(r#"{"amount":"5.00"}"#);
                driver
                    .run(&scope, &fp, |_lease| async move {
                        let n = executions.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(handler_time).await;
                        HandlerResult::Store(response(&format!("txn_{n}")))
                    })
                    .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    (executions.load(Ordering::SeqCst), results)
}

/// One execution; everyone else got its result, or (if `conflicts_allowed`) a 409.
fn assert_one_execution(
    executions: u32,
    results: Vec<Result<Outcome, Error>>,
    conflicts_allowed: bool,
) {
    assert_eq!(executions, 1);
    let mut executed = 0;
    for result in results {
        match result {
            Ok(Outcome::Executed(r)) => {
                executed += 1;
                assert_eq!(r, response("txn_0"));
            }
            Ok(Outcome::Replayed(r)) => assert_eq!(r, response("txn_0")),
            Err(error) => {
                assert!(conflicts_allowed, "unexpected {error}");
                assert_eq!(error.status(), 409, "{error}");
            }
        }
    }
    assert!(executed <= 1);
}

fn memory_drivers(wait: Duration) -> [Arc<Idempotency<MemoryStore>>; 2] {
    let config = IdempotencyConfig::default().wait(wait);
    let driver = Arc::new(Idempotency::new(MemoryStore::new(1_000), config));
    [Arc::clone(&driver), driver]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_execution_everyone_sees_it() {
    let (executions, results) = race(
        memory_drivers(Duration::from_secs(5)),
        Duration::from_millis(50),
    )
    .await;
    let executed = results
        .iter()
        .filter(|r| matches!(r, Ok(Outcome::Executed(_))))
        .count();
    assert_eq!(executed, 1);
    assert_one_execution(executions, results, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_wait_bound_duplicates_get_a_conflict() {
    let (executions, results) = race(
        memory_drivers(Duration::from_millis(5)),
        Duration::from_millis(50),
    )
    .await;
    let conflicts = results
        .iter()
        .filter(
            |r| matches!(r, Err(Error::Conflict { retry_after }) if *retry_after > Duration::ZERO),
        )
        .count();
    assert!(conflicts > 0, "a 5 ms wait cannot outlast a 50 ms handler");
    assert_one_execution(executions, results, true);
}

/// Two drivers with separate pools on one store: exactly one execution, no conflicts within a
/// 10 s wait.
#[cfg(any(feature = "postgres", feature = "redis"))]
async fn two_process_race<S: IdempotencyStore + 'static>(a: S, b: S) {
    let config = IdempotencyConfig::default().wait(Duration::from_secs(10));
    let drivers = [
        Arc::new(Idempotency::new(a, config)),
        Arc::new(Idempotency::new(b, config)),
    ];
    let (executions, results) = race(drivers, Duration::from_millis(100)).await;
    let executed = results
        .iter()
        .filter(|r| matches!(r, Ok(Outcome::Executed(_))))
        .count();
    assert_eq!(executed, 1);
    assert_one_execution(executions, results, true);
}

/// Two pools on one PostgreSQL database, database time.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_pools_one_execution() {
    use crate::support::pg;
    let Some((url, schema)) = pg::database("concurrency::postgres_two_pools_one_execution") else {
        return;
    };
    two_process_race(
        pg::store(&url, &schema, None).await,
        pg::store(&url, &schema, None).await,
    )
    .await;
    pg::drop_schema(&url, &schema).await;
}

/// Two pools on one Redis, server time.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_two_pools_one_execution() {
    use crate::support::rd;
    let Some((url, prefix)) = rd::redis("concurrency::redis_two_pools_one_execution") else {
        return;
    };
    two_process_race(
        rd::store(&url, &prefix, None),
        rd::store(&url, &prefix, None),
    )
    .await;
    rd::drop_prefix(&url, &prefix).await;
}

/// Two connections to one Redis Cluster (two processes), server time: one execution.
#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_two_connections_one_execution() {
    use crate::support::rd;
    let Some((urls, prefix)) =
        rd::cluster("concurrency::redis_cluster_two_connections_one_execution")
    else {
        return;
    };
    two_process_race(
        rd::cluster_store(&urls, &prefix, None).await,
        rd::cluster_store(&urls, &prefix, None).await,
    )
    .await;
    rd::drop_cluster_prefix(&urls, &prefix).await;
}
