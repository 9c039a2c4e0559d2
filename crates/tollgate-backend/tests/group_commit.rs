//! Group commit against a real PostgreSQL (`TEST_DATABASE_URL`): each caller of a shared
//! transaction gets what its statement would have given alone.

#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use parking_lot::Mutex;
use tokio_postgres::types::Type;
use tollgate_backend::Error;
use tollgate_backend::group_commit::{Batched, GroupCommit, GroupCommitConfig, Written, callers};
use tollgate_backend::postgres::{Query, StatementMode};

/// A pool on a schema of this test's own, or `None` after saying why the test is skipped.
async fn database(test: &str) -> Option<(deadpool_postgres::Pool, String)> {
    let Some(url) = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!(
            "SKIPPED {test}: needs PostgreSQL; set TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres to run it"
        );
        return None;
    };
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let schema = format!(
        "tg_group_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let config: tokio_postgres::Config = url.parse().expect("TEST_DATABASE_URL");
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(8)
        .build()
        .expect("a pool");
    let client = pool.get().await.expect("PostgreSQL at TEST_DATABASE_URL");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; \
             CREATE TABLE {schema}.t (k text PRIMARY KEY, n int NOT NULL CHECK (n > 0));"
        ))
        .await
        .expect("the table");
    Some((pool, schema))
}

async fn drop_schema(pool: &deadpool_postgres::Pool, schema: &str) {
    let client = pool.get().await.expect("a connection");
    let _ = client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
}

fn insert(schema: &str) -> Arc<Query> {
    Arc::new(Query::new(
        format!("INSERT INTO {schema}.t VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING k"),
        &[Type::TEXT, Type::INT4],
    ))
}

/// [`insert`] with a form for many callers: one `INSERT … SELECT` from the callers' arrays,
/// each inserted key's caller told by its position.
fn insert_many(schema: &str) -> Arc<Batched> {
    let one = Arc::unwrap_or_clone(insert(schema));
    let many = format!(
        "WITH i AS (SELECT * FROM {}), \
         c AS (INSERT INTO {schema}.t SELECT p1, p2 FROM i ON CONFLICT DO NOTHING RETURNING k) \
         SELECT c.k, i.n FROM c JOIN i ON i.p1 = c.k",
        callers(one.types(), "i")
    );
    Arc::new(Batched::new(one, many, 1).expect("text and int4 have arrays"))
}

/// The keys the test table holds, in order.
async fn committed_keys(pool: &deadpool_postgres::Pool, schema: &str) -> Vec<String> {
    let client = pool.get().await.expect("a connection");
    let select = format!("SELECT k FROM {schema}.t ORDER BY k");
    let rows = client.query(&select, &[]).await.expect("the rows");
    rows.iter().map(|row| row.get(0)).collect()
}

/// One writer, and the size of each transaction it wrote.
fn one_writer(pool: &deadpool_postgres::Pool) -> (GroupCommit, Arc<Mutex<Vec<usize>>>) {
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&sizes);
    // Nothing sent alone: a statement sent while the writer is idle is its batch of one.
    let config = (GroupCommitConfig::default().writers(1).max_batch(16)).alone_up_to(0);
    let writes = GroupCommit::observed(
        pool.clone(),
        StatementMode::Prepared,
        config,
        Arc::new(move |written: Written| {
            assert!(!written.by_caller, "sent by the writer");
            seen.lock().push(written.statements);
        }),
    );
    (writes, sizes)
}

/// Sends a one-second statement and returns once the writer has taken it (the batch sizes it
/// reported grew): statements sent now wait for the next batch.
async fn occupy(
    writes: &GroupCommit,
    sizes: &Arc<Mutex<Vec<usize>>>,
) -> tokio::task::JoinHandle<()> {
    let before = sizes.lock().len();
    let writes = writes.clone();
    let sleep = Arc::new(Query::new("SELECT pg_sleep(1)::text", &[]));
    let busy = tokio::spawn(async move {
        writes.rows(&sleep, &[]).await.expect("slept");
    });
    until_reported(sizes, before + 1).await;
    busy
}

/// Returns once the observer has heard of `count` transactions (failing after 10 s).
async fn until_reported<T>(reports: &Mutex<Vec<T>>, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reports.lock().len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writer took nothing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_each_caller_as_alone() {
    let Some((pool, schema)) = database("a_batch_answers_each_caller_as_alone").await else {
        return;
    };
    let insert = insert(&schema);
    let (writes, sizes) = one_writer(&pool);
    let written = writes
        .rows(&insert, &[&"taken", &1])
        .await
        .expect("a lone insert");
    assert_eq!(written.len(), 1);

    let busy = occupy(&writes, &sizes).await;
    let call = |key: &'static str| {
        let (writes, insert) = (writes.clone(), Arc::clone(&insert));
        tokio::spawn(async move { writes.rows(&insert, &[&key, &1]).await.map(|r| r.len()) })
    };
    let taken = call("taken");
    let (first, second) = (call("twice"), call("twice"));
    let fresh = call("fresh");
    let cancelled = call("cancelled");
    // Queued behind the slow statement (or not yet sent): either way, never written.
    tokio::time::sleep(Duration::from_millis(50)).await;
    cancelled.abort();
    busy.await.expect("the slow statement");

    assert_eq!(taken.await.expect("a task").expect("rows"), 0, "a conflict");
    let twice = [first, second];
    let mut inserted = Vec::new();
    for call in twice {
        inserted.push(call.await.expect("a task").expect("rows"));
    }
    inserted.sort_unstable();
    assert_eq!(inserted, [0, 1], "the second of a pair sees the first");
    assert_eq!(fresh.await.expect("a task").expect("rows"), 1);
    assert_eq!(
        *sizes.lock(),
        [1, 1, 4],
        "the lone insert, the sleep, then one batch of four"
    );

    assert_eq!(
        committed_keys(&pool, &schema).await,
        ["fresh", "taken", "twice"],
        "the cancelled caller wrote nothing"
    );
    drop_schema(&pool, &schema).await;
}

/// The test table's insert, submitted as a statement of its own or with its form for many.
#[derive(Clone)]
enum Insert {
    Plain(Arc<Query>),
    Batched(Arc<Batched>),
}

impl Insert {
    /// The number of rows inserting `(key, n)` returned.
    async fn rows(&self, writes: &GroupCommit, key: &str, n: i32) -> Result<usize, Error> {
        let rows = match self {
            Insert::Plain(query) => writes.rows(query, &[&key, &n]).await,
            Insert::Batched(batched) => writes.batch_rows(batched, &[&key, &n]).await,
        };
        rows.map(|rows| rows.len())
    }
}

/// A row the database refuses fails its caller's statement alone: the batch is rolled back
/// and each caller's statement sent again by itself.
async fn a_refused_row_fails_alone(test: &str, insert: fn(&str) -> Insert) {
    let Some((pool, schema)) = database(test).await else {
        return;
    };
    let insert = insert(&schema);
    let (writes, sizes) = one_writer(&pool);
    let busy = occupy(&writes, &sizes).await;
    let call = |key: &'static str, n: i32| {
        let (writes, insert) = (writes.clone(), insert.clone());
        tokio::spawn(async move { insert.rows(&writes, key, n).await })
    };
    let (before, refused, after) = (call("before", 1), call("refused", -1), call("after", 1));
    busy.await.expect("the slow statement");

    assert_eq!(before.await.expect("a task").expect("rows"), 1);
    let error = (refused.await.expect("a task")).expect_err("the CHECK refuses it");
    assert!(!error.is_transient(), "{error}");
    assert_eq!(after.await.expect("a task").expect("rows"), 1);
    assert_eq!(
        *sizes.lock(),
        [1, 3],
        "one batch, rolled back and sent again alone"
    );
    drop_schema(&pool, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_statement_fails_alone() {
    let plain = |schema: &str| Insert::Plain(insert(schema));
    a_refused_row_fails_alone("a_failing_statement_fails_alone", plain).await;
}

#[tokio::test]
async fn a_value_of_the_wrong_type_is_refused_before_sending() {
    let Some((pool, schema)) =
        database("a_value_of_the_wrong_type_is_refused_before_sending").await
    else {
        return;
    };
    // Through the writer, and sent alone (the default, with nothing else in flight).
    let alone = GroupCommit::new(
        pool.clone(),
        StatementMode::Prepared,
        GroupCommitConfig::default(),
    );
    for writes in [one_writer(&pool).0, alone] {
        let error = writes
            .rows(&insert(&schema), &[&"k", &"not a number"])
            .await
            .expect_err("text for an int4");
        assert!(!error.is_transient());
    }
    assert!(committed_keys(&pool, &schema).await.is_empty());
    drop_schema(&pool, &schema).await;
}

/// Callers of one batched statement share an execution; a key already taken, a key sent twice
/// and a caller that left are each answered as alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_statement_answers_each_caller_as_alone() {
    let Some((pool, schema)) = database("a_batched_statement_answers_each_caller_as_alone").await
    else {
        return;
    };
    let insert = insert_many(&schema);
    let (writes, sizes) = one_writer(&pool);
    let written = (writes.batch_rows(&insert, &[&"taken", &1]).await).expect("a lone insert");
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].len(), 1, "alone: the one form's columns");

    let busy = occupy(&writes, &sizes).await;
    // Each caller's rows, and their columns (two from the shared execution).
    let call = |key: &'static str| {
        let (writes, insert) = (writes.clone(), Arc::clone(&insert));
        tokio::spawn(async move {
            let rows = writes.batch_rows(&insert, &[&key, &1]).await;
            rows.map(|rows| rows.iter().map(|row| row.len()).collect::<Vec<_>>())
        })
    };
    let taken = call("taken");
    let (first, second) = (call("twice"), call("twice"));
    let fresh = [call("fresh-1"), call("fresh-2")];
    let cancelled = call("cancelled");
    tokio::time::sleep(Duration::from_millis(50)).await;
    cancelled.abort();
    busy.await.expect("the slow statement");

    assert_eq!(
        taken.await.expect("a task").expect("rows"),
        Vec::<usize>::new()
    );
    let mut twice = Vec::new();
    for call in [first, second] {
        twice.push(call.await.expect("a task").expect("rows"));
    }
    twice.sort_unstable();
    // Whichever ran first (shared or alone) inserted; the other saw its row.
    assert!(twice[0].is_empty() && twice[1].len() == 1, "{twice:?}");
    for call in fresh {
        assert_eq!(call.await.expect("a task").expect("rows"), [2], "shared");
    }
    assert_eq!(
        *sizes.lock(),
        [1, 1, 5],
        "the lone insert, the sleep, one batch"
    );
    assert_eq!(
        committed_keys(&pool, &schema).await,
        ["fresh-1", "fresh-2", "taken", "twice"],
        "nothing of the cancelled"
    );
    drop_schema(&pool, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_row_of_a_batched_statement_fails_alone() {
    let batched = |schema: &str| Insert::Batched(insert_many(schema));
    a_refused_row_fails_alone("a_refused_row_of_a_batched_statement_fails_alone", batched).await;
}

#[test]
fn a_type_without_an_array_type_is_refused() {
    let one = Query::new("SELECT $1", &[Type::POINT]);
    let error = Batched::new(one, "SELECT 1", 1).expect_err("no point[] here");
    assert!(error.to_string().contains("failed"), "{error}");
}

/// A statement sent while few are in flight and no batch is being written goes at once, alone,
/// beside the others; past that, statements wait for the writer and are batched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_go_alone_only_while_few_are_in_flight() {
    let Some((pool, schema)) = database("statements_go_alone_only_while_few_are_in_flight").await
    else {
        return;
    };
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&sizes);
    let config = (GroupCommitConfig::default().writers(1).max_batch(16)).alone_up_to(1);
    let observe = Arc::new(move |written: Written| {
        seen.lock().push((written.statements, written.by_caller));
    });
    let writes = GroupCommit::observed(pool.clone(), StatementMode::Prepared, config, observe);
    let (insert, key) = (insert(&schema), i64::from(std::process::id()));
    let wait_for_lock = Arc::new(Query::new(
        "SELECT pg_advisory_xact_lock($1)::text",
        &[Type::INT8],
    ));
    // A transaction of the test's own holds the lock the first two statements wait for.
    let holder = pool.get().await.expect("a connection");
    holder.batch_execute("BEGIN").await.expect("begun");
    holder
        .execute("SELECT pg_advisory_xact_lock($1)", &[&key])
        .await
        .expect("locked");

    // The first, alone in flight, is sent alone, beside the writer, which stays free; it counts
    // as in flight until it is answered (after the lock is released).
    let locking = || {
        let (writes, wait_for_lock) = (writes.clone(), Arc::clone(&wait_for_lock));
        Box::pin(async move { writes.rows(&wait_for_lock, &[&key]).await })
    };
    let mut first = locking();
    assert!(first.as_mut().now_or_never().is_none());
    assert_eq!(
        *sizes.lock(),
        [(1, true)],
        "sent alone as soon as submitted"
    );
    // The second (two in flight) goes to the idle writer, which waits for the lock too.
    let mut second = locking();
    assert!(second.as_mut().now_or_never().is_none());
    until_reported(&sizes, 2).await;
    // A batch is being written: the next three wait for the writer, and go as one batch.
    let mut rest: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|k| {
            let (writes, insert) = (writes.clone(), Arc::clone(&insert));
            Box::pin(async move { writes.rows(&insert, &[&k, &1]).await })
        })
        .collect();
    for call in &mut rest {
        assert!(call.as_mut().now_or_never().is_none());
    }
    holder.batch_execute("COMMIT").await.expect("released");

    assert_eq!(first.await.expect("the first").len(), 1);
    assert_eq!(second.await.expect("the second").len(), 1);
    for call in rest {
        assert_eq!(call.await.expect("an insert").len(), 1);
    }
    assert_eq!(
        *sizes.lock(),
        [(1, true), (1, false), (3, false)],
        "the first alone, the second by the writer, then one batch of three"
    );
    assert_eq!(committed_keys(&pool, &schema).await, ["a", "b", "c"]);
    drop_schema(&pool, &schema).await;
}

/// The backend process that ran a statement sent through the writer.
async fn writer_backend(writes: &GroupCommit) -> Result<i32, Error> {
    let pid = Arc::new(Query::new("SELECT pg_backend_pid()", &[]));
    let rows = writes.rows(&pid, &[]).await?;
    Ok(rows[0].get(0))
}

/// The writer keeps its connection from one batch to the next, even while the pool hands out
/// others: its backend's caches stay warm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_keeps_its_connection() {
    let Some((pool, schema)) = database("the_writer_keeps_its_connection").await else {
        return;
    };
    let (writes, _) = one_writer(&pool);
    let first = writer_backend(&writes).await.expect("a backend");
    // Returned to the pool, the writer's connection would be the next one handed out.
    let other = pool.get().await.expect("a connection");
    let others: i32 = (other.query_one("SELECT pg_backend_pid()", &[]).await)
        .expect("a backend")
        .get(0);
    assert_ne!(others, first, "the writer's connection is not in the pool");
    assert_eq!(writer_backend(&writes).await.expect("a backend"), first);
    drop(other);
    drop_schema(&pool, &schema).await;
}

/// When the writer's connection breaks (its backend ended between batches), the writer takes
/// another from the pool: a statement that finds the connection broken before the writer has
/// seen it close fails, and the writer then goes on with a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_connection_is_replaced() {
    let Some((pool, schema)) = database("a_broken_connection_is_replaced").await else {
        return;
    };
    let (writes, _) = one_writer(&pool);
    let first = writer_backend(&writes).await.expect("a backend");
    let admin = pool.get().await.expect("a connection");
    let ended: bool = (admin
        .query_one("SELECT pg_terminate_backend($1, 10000)", &[&first])
        .await)
        .expect("terminated")
        .get(0);
    assert!(ended, "the backend exited");
    drop(admin);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let next = loop {
        match writer_backend(&writes).await {
            Ok(pid) => break pid,
            Err(error) => assert!(
                tokio::time::Instant::now() < deadline,
                "the writer kept failing: {error}"
            ),
        }
    };
    assert_ne!(next, first, "a new connection");
    let insert = insert(&schema);
    assert_eq!(
        writes
            .rows(&insert, &[&"a", &1])
            .await
            .expect("inserted")
            .len(),
        1
    );
    drop_schema(&pool, &schema).await;
}

/// A caller hears whether its statement may succeed if sent again: yes after the errors by
/// which the server says so (a rolled-back transaction, a shutdown, a read-only server), no
/// after an error of the statement itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_the_server_says_may_pass_are_transient() {
    let Some((pool, schema)) = database("errors_the_server_says_may_pass_are_transient").await
    else {
        return;
    };
    let client = pool.get().await.expect("a connection");
    let fail = format!(
        "CREATE FUNCTION {schema}.fail(code text) RETURNS text LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = code; END $$"
    );
    client.batch_execute(&fail).await.expect("the function");
    drop(client);
    let (writes, _) = one_writer(&pool);
    let raise = Arc::new(Query::new(
        format!("SELECT {schema}.fail($1)"),
        &[Type::TEXT],
    ));
    // The read-only error last: it ends the connection it arrives on.
    let codes = [
        ("23505", false),
        ("22P02", false),
        ("42501", false),
        ("40001", true),
        ("40P01", true),
        ("57P01", true),
        ("53300", true),
        ("08006", true),
        ("25006", true),
    ];
    for (code, transient) in codes {
        let error = writes.rows(&raise, &[&code]).await.expect_err("raised");
        assert_eq!(error.is_transient(), transient, "{code}: {error}");
    }
    drop_schema(&pool, &schema).await;
}
