//! 100 tasks race one key through the driver: the handler runs exactly once, and every caller
//! sees that one result (or, with a short wait bound, a 409 conflict).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tollgate_idempotency::driver::{HandlerResult, Idempotency, IdempotencyConfig, Outcome};
use tollgate_idempotency::memory::MemoryStore;
use tollgate_idempotency::Error;

use crate::support::{fingerprint, response, scope};

async fn race(wait: Duration) -> (u32, Vec<Result<Outcome, Error>>) {
    let config = IdempotencyConfig {
        wait,
        ..IdempotencyConfig::default()
    };
    let driver = Arc::new(Idempotency::new(MemoryStore::new(1_000), config));
    let executions = Arc::new(AtomicU32::new(0));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (driver, executions) = (Arc::clone(&driver), Arc::clone(&executions));
            tokio::spawn(async move {
                let scope = scope("alice", "race-key-0123456789");
                let fp = fingerprint(r#"{"amount":"5.00"}"#);
                driver
                    .run(&scope, &fp, |_lease| async move {
                        let n = executions.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_execution_everyone_sees_it() {
    let (executions, results) = race(Duration::from_secs(5)).await;
    assert_eq!(executions, 1);
    let mut executed = 0;
    for result in results {
        match result.expect("no conflicts with a 5 s wait") {
            Outcome::Executed(r) => {
                executed += 1;
                assert_eq!(r, response("txn_0"));
            }
            Outcome::Replayed(r) => assert_eq!(r, response("txn_0")),
        }
    }
    assert_eq!(executed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_wait_bound_duplicates_get_a_conflict() {
    let (executions, results) = race(Duration::from_millis(5)).await;
    assert_eq!(executions, 1);
    let conflicts = results
        .iter()
        .filter(
            |r| matches!(r, Err(Error::Conflict { retry_after }) if *retry_after > Duration::ZERO),
        )
        .count();
    assert!(conflicts > 0, "a 5 ms wait cannot outlast a 50 ms handler");
    for result in results {
        match result {
            Ok(Outcome::Executed(r) | Outcome::Replayed(r)) => assert_eq!(r, response("txn_0")),
            Err(error) => assert_eq!(error.status(), 409),
        }
    }
}

/// 100 tasks split over two drivers with separate pools (two "processes") on one store: exactly
/// one execution; every caller sees its result or a 409.
#[cfg(any(feature = "postgres", feature = "redis"))]
async fn two_process_race<S: tollgate_idempotency::store::IdempotencyStore + 'static>(a: S, b: S) {
    let config = IdempotencyConfig {
        wait: Duration::from_secs(10),
        ..IdempotencyConfig::default()
    };
    let a = Arc::new(Idempotency::new(a, config));
    let b = Arc::new(Idempotency::new(b, config));
    let executions = Arc::new(AtomicU32::new(0));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let driver = if i % 2 == 0 {
                Arc::clone(&a)
            } else {
                Arc::clone(&b)
            };
            let executions = Arc::clone(&executions);
            tokio::spawn(async move {
                let scope = scope("alice", "race-key-0123456789");
                let fp = fingerprint(r#"{"amount":"5.00"}"#);
                driver
                    .run(&scope, &fp, |_lease| async move {
                        let n = executions.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        HandlerResult::Store(response(&format!("txn_{n}")))
                    })
                    .await
            })
        })
        .collect();
    let mut executed = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(Outcome::Executed(r)) => {
                executed += 1;
                assert_eq!(r, response("txn_0"));
            }
            Ok(Outcome::Replayed(r)) => assert_eq!(r, response("txn_0")),
            Err(error) => assert_eq!(error.status(), 409, "{error}"),
        }
    }
    assert_eq!((executions.load(Ordering::SeqCst), executed), (1, 1));
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
