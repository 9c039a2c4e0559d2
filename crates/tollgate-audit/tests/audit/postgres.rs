use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tollgate_audit::postgres::deadpool_postgres::{self, Config, Pool, Runtime};
use tollgate_audit::postgres::tokio_postgres::NoTls;
use tollgate_audit::postgres::{AuditLogConfig, EventParams, PostgresAuditLog};
use tollgate_audit::{Action, AuditEvent, AuditLog, AuditSink, Error, Outcome, PageRequest};

/// A pool and a schema of this test's own, or `None` after saying the test was skipped.
async fn database(test: &str) -> Option<(Pool, String)> {
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
    let schema = format!(
        "tollgate_test_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut config = Config::new();
    config.url = Some(url);
    let pool = config
        .create_pool(Some(Runtime::Tokio1), NoTls)
        .expect("a valid url");
    // Fail loudly if the database is configured but unreachable.
    let _probe = pool
        .get()
        .await
        .expect("TEST_DATABASE_URL is set but PostgreSQL is unreachable");
    Some((pool, schema))
}

async fn drop_schema(pool: &Pool, schema: &str) {
    let client = pool.get().await.expect("database");
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .expect("drop schema");
}

async fn count(pool: &Pool, schema: &str, table: &str) -> i64 {
    let client = pool.get().await.expect("database");
    let row = client
        .query_one(&format!("SELECT count(*) FROM {schema}.{table}"), &[])
        .await
        .expect("count");
    row.get(0)
}

fn config(schema: &str) -> AuditLogConfig {
    AuditLogConfig::default().schema(schema)
}

/// A started log in `schema`, and a connection on which `ddl` (the caller's own tables) ran.
async fn started_beside(
    pool: &Pool,
    schema: &str,
    ddl: &str,
) -> (PostgresAuditLog, deadpool_postgres::Object) {
    let log = PostgresAuditLog::start(pool.clone(), config(schema))
        .await
        .expect("start");
    let client = pool.get().await.expect("database");
    client
        .batch_execute(ddl)
        .await
        .expect("the caller's tables");
    (log, client)
}

#[tokio::test]
async fn pages_newest_first_per_user_with_every_field() {
    let Some((pool, schema)) =
        database("audit::postgres::pages_newest_first_per_user_with_every_field").await
    else {
        return;
    };
    let log = PostgresAuditLog::start(pool.clone(), config(&schema))
        .await
        .expect("start");
    let mut written = Vec::new();
    for i in 0..25u16 {
        let event = AuditEvent::new("alice", Action::PAYMENT_ATTEMPT, Outcome::Success)
            .status(201)
            .idempotency_key(format!("key-{i:0>16}"))
            .transaction_id(format!("txn_{i}"))
            .request_id(format!("req-{i}"))
            .latency(Duration::from_micros(1_500))
            .field("attempt", i);
        written.push(event.clone());
        log.record(event).await.expect("accepted");
        log.record(AuditEvent::new(
            "bob",
            Action::RATE_LIMITED,
            Outcome::Denied,
        ))
        .await
        .expect("accepted");
    }
    log.flush().await.expect("flushed");
    let stats = log.stats();
    assert_eq!(stats.events_written, 50, "{stats:?}");
    assert!((1..=50).contains(&stats.batches_written), "{stats:?}");
    assert_eq!((stats.queued, stats.batch_failures), (0, 0), "{stats:?}");
    assert!(stats.capacity > 0, "{stats:?}");

    let mut read = Vec::new();
    let mut cursor: Option<String> = None;
    let mut sizes = Vec::new();
    loop {
        let page = log
            .page(
                "alice",
                PageRequest::new(Some(10), cursor.as_deref()).expect("valid"),
            )
            .await
            .expect("page");
        sizes.push(page.entries.len());
        read.extend(page.entries);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(sizes, [10, 10, 5]);
    written.reverse();
    assert_eq!(read, written, "every field reads back, newest first");
    log.shutdown().await.expect("clean shutdown");
    drop_schema(&pool, &schema).await;
}

/// Eight producers record as fast as they can while the log shuts down: every event that
/// `record` accepted is in the table, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_loses_nothing_accepted() {
    let Some((pool, schema)) =
        database("audit::postgres::shutdown_under_load_loses_nothing_accepted").await
    else {
        return;
    };
    let log = Arc::new(
        PostgresAuditLog::start(
            pool.clone(),
            config(&schema).queue_capacity(64).batch_size(50),
        )
        .await
        .expect("start"),
    );
    let accepted = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = (0..8)
        .map(|p| {
            let (log, accepted) = (Arc::clone(&log), Arc::clone(&accepted));
            tokio::spawn(async move {
                for i in 0..100_000u32 {
                    let event = AuditEvent::new(
                        format!("user-{p}"),
                        Action::PAYMENT_ATTEMPT,
                        Outcome::Success,
                    )
                    .field("i", i);
                    match log.record(event).await {
                        Ok(()) => accepted.fetch_add(1, Ordering::SeqCst),
                        Err(Error::Closed) => return,
                        Err(other) => panic!("unexpected {other}"),
                    };
                }
            })
        })
        .collect();
    // Let the queue fill and the writer fall behind, then shut down mid-stream.
    while accepted.load(Ordering::SeqCst) < 3_000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    log.shutdown().await.expect("every accepted event written");
    for producer in producers {
        producer.await.expect("producer");
    }
    let accepted = accepted.load(Ordering::SeqCst);
    assert!(accepted >= 3_000);
    assert_eq!(
        count(&pool, &schema, "audit_events").await,
        i64::try_from(accepted).expect("small")
    );
    assert!(matches!(
        log.record(AuditEvent::new(
            "late",
            Action::PAYMENT_ATTEMPT,
            Outcome::Success
        ))
        .await,
        Err(Error::Closed)
    ));
    drop_schema(&pool, &schema).await;
}

#[tokio::test]
async fn an_event_commits_or_rolls_back_with_the_callers_transaction() {
    let Some((pool, schema)) =
        database("audit::postgres::an_event_commits_or_rolls_back_with_the_callers_transaction")
            .await
    else {
        return;
    };
    let (log, mut client) = started_beside(
        &pool,
        &schema,
        &format!("CREATE TABLE {schema}.payments (id text PRIMARY KEY)"),
    )
    .await;
    for commit in [false, true] {
        let tx = client.transaction().await.expect("begin");
        tx.execute(
            &format!("INSERT INTO {schema}.payments VALUES ($1)"),
            &[&format!("txn_{commit}")],
        )
        .await
        .expect("payment row");
        let event = AuditEvent::new("alice", Action::PAYMENT_ATTEMPT, Outcome::Success)
            .transaction_id("txn");
        log.record_in(&tx, &event).await.expect("audit row");
        if commit {
            tx.commit().await.expect("commit");
        } else {
            tx.rollback().await.expect("rollback");
        }
        let expected = i64::from(commit);
        assert_eq!(count(&pool, &schema, "payments").await, expected);
        assert_eq!(
            count(&pool, &schema, "audit_events").await,
            expected,
            "audit follows the payment"
        );
    }
    drop(client);
    log.shutdown().await.expect("clean shutdown");
    drop_schema(&pool, &schema).await;
}

/// The event written in the caller's own statement, conditionally, and read back whole.
#[tokio::test]
async fn an_event_composes_into_the_callers_statement() {
    let Some((pool, schema)) =
        database("audit::postgres::an_event_composes_into_the_callers_statement").await
    else {
        return;
    };
    let (log, client) = started_beside(
        &pool,
        &schema,
        &format!("CREATE TABLE {schema}.payments (id text PRIMARY KEY)"),
    )
    .await;
    // $1 the payment, $2–$12 the event, written only with a payment.
    let sql = format!(
        "WITH p AS (INSERT INTO {schema}.payments VALUES ($1) ON CONFLICT DO NOTHING RETURNING 1) {} \
         WHERE EXISTS (SELECT 1 FROM p)",
        log.insert_select_statement(2)
    );
    let event = AuditEvent::new("alice", Action::PAYMENT_STARTED, Outcome::Success)
        .status(202)
        .idempotency_key("order-1")
        .transaction_id("txn_1")
        .latency(Duration::from_micros(1500))
        .field("amount_minor", 999);
    for (attempt, written) in [(1, 1), (2, 0)] {
        let params = EventParams::new(&event);
        let id = "txn_1".to_owned();
        let mut all: Vec<&(dyn tollgate_audit::postgres::tokio_postgres::types::ToSql + Sync)> =
            vec![&id];
        all.extend_from_slice(&params.as_params());
        // The second attempt inserts no payment, so no event either (and no duplicate id).
        let rows = client.execute(sql.as_str(), &all).await.expect("statement");
        assert_eq!(rows, written, "attempt {attempt}");
    }
    let page = log
        .page("alice", PageRequest::new(None, None).expect("page"))
        .await
        .expect("read");
    assert_eq!(page.entries, vec![event]);
    drop(client);
    log.shutdown().await.expect("clean shutdown");
    drop_schema(&pool, &schema).await;
}

/// The events of many rows in one statement: one event for each row a caller's own write
/// returned, its values expressions over that row.
#[tokio::test]
async fn events_of_many_rows_in_one_statement() {
    let Some((pool, schema)) =
        database("audit::postgres::events_of_many_rows_in_one_statement").await
    else {
        return;
    };
    let (log, client) = started_beside(
        &pool,
        &schema,
        &format!(
            "CREATE TABLE {schema}.payments (id text PRIMARY KEY, user_id text NOT NULL); \
             INSERT INTO {schema}.payments VALUES ('txn_taken', 'carol')"
        ),
    )
    .await;
    let events = PostgresAuditLog::insert_many_statement_in(
        &schema,
        "p",
        &[
            "gen_random_uuid()",
            "now()",
            "p.user_id",
            "'payment_started'",
            "'success'",
            "202",
            "NULL",
            "p.id",
            "NULL",
            "NULL",
            "'{}'::jsonb",
        ],
    )
    .expect("a statement");
    // Three payments offered, one already there: two rows written, two events.
    let sql = format!(
        "WITH p AS (INSERT INTO {schema}.payments SELECT * FROM unnest($1::text[], $2::text[]) \
         ON CONFLICT DO NOTHING RETURNING id, user_id) {events}"
    );
    let ids = ["txn_a", "txn_b", "txn_taken"];
    let users = ["alice", "bob", "carol"];
    let written = (client
        .execute(sql.as_str(), &[&&ids[..], &&users[..]])
        .await)
        .expect("statement");
    assert_eq!(written, 2);
    for (user, id) in [("alice", "txn_a"), ("bob", "txn_b")] {
        let page = log
            .page(user, PageRequest::new(None, None).expect("page"))
            .await
            .expect("read");
        assert_eq!(page.entries.len(), 1, "{user}");
        assert_eq!(page.entries[0].transaction_id.as_deref(), Some(id));
        assert_eq!(page.entries[0].status_code, Some(202));
    }
    let none = log
        .page("carol", PageRequest::new(None, None).expect("page"))
        .await;
    assert!(
        none.expect("read").entries.is_empty(),
        "no event without a row"
    );
    drop(client);
    log.shutdown().await.expect("clean shutdown");
    drop_schema(&pool, &schema).await;
}

#[tokio::test]
async fn schema_names_are_validated() {
    let Some((pool, _)) = database("audit::postgres::schema_names_are_validated").await else {
        return;
    };
    let bad = AuditLogConfig::default().schema("x; DROP TABLE y");
    assert!(PostgresAuditLog::start(pool, bad).await.is_err());
}
