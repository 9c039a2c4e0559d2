//! The PostgreSQL audit log: a bounded queue in front of a batching writer task.
//!
//! [`record`](AuditSink::record) puts the event on a bounded queue and returns; when the queue
//! is full, callers wait (backpressure, never an unbounded buffer). A writer task drains the queue
//! in batches of up to `batch_size`, one `INSERT … SELECT FROM UNNEST(…)` per batch, retrying a
//! failed batch with capped backoff (re-sending is safe: inserts ignore ids already present).
//! [`flush`](AuditSink::flush) returns once everything accepted before it is committed;
//! [`shutdown`](PostgresAuditLog::shutdown) stops accepting, drains the queue and reports any event
//! it could not write before its deadline. [`record_in`](PostgresAuditLog::record_in) writes an
//! event inside the caller's transaction, so a payment and its audit record commit together.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tollgate_audit::postgres::{AuditLogConfig, PostgresAuditLog};
//! use tollgate_audit::{Action, AuditEvent, AuditSink, Outcome};
//!
//! let mut pool_config = tollgate_audit::postgres::deadpool_postgres::Config::new();
//! pool_config.url = Some("postgres://postgres@127.0.0.1/postgres".into());
//! let pool = pool_config.create_pool(
//!     Some(tollgate_audit::postgres::deadpool_postgres::Runtime::Tokio1),
//!     tollgate_audit::postgres::tokio_postgres::NoTls,
//! )?;
//! let log = PostgresAuditLog::start(pool, AuditLogConfig::default()).await?;
//! log.record(AuditEvent::new("alice", Action::PAYMENT_ATTEMPT, Outcome::Success)).await?;
//! log.shutdown().await?; // everything accepted is in the table
//! # Ok(())
//! # }
//! ```

mod params;
mod sql;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};
use tollgate_backend::postgres::{On, Query};
use uuid::Uuid;

pub use deadpool_postgres;
pub use params::EventParams;
use params::{BATCH_TYPES, insert_select};
pub use tokio_postgres;
pub use tollgate_backend::postgres::StatementMode;

use crate::{Action, AuditEvent, AuditLog, AuditSink, Error, Outcome, Page, PageRequest};

/// Settings of the PostgreSQL audit log: start from the default and change what you need
/// (`AuditLogConfig::default().schema("payments")`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditLogConfig {
    /// The schema holding `audit_events` (`[a-z_][a-z0-9_]*`, at most 63 bytes).
    pub schema: String,
    /// Events the queue holds before `record` waits.
    pub queue_capacity: usize,
    /// Events per INSERT.
    pub batch_size: usize,
    /// How long shutdown keeps retrying an unreachable database before giving up.
    pub shutdown_timeout: Duration,
    /// How statements are sent: [`StatementMode::Unnamed`] behind a pooler in transaction
    /// mode.
    pub statement_mode: StatementMode,
}

impl AuditLogConfig {
    /// The schema holding `audit_events`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Events the queue holds before `record` waits.
    pub fn queue_capacity(mut self, events: usize) -> Self {
        self.queue_capacity = events;
        self
    }

    /// Events per INSERT.
    pub fn batch_size(mut self, events: usize) -> Self {
        self.batch_size = events;
        self
    }

    /// How long shutdown keeps retrying an unreachable database.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How statements are sent: [`StatementMode::Unnamed`] behind a pooler in transaction
    /// mode (PgBouncer's `pool_mode = transaction`).
    pub fn statement_mode(mut self, mode: StatementMode) -> Self {
        self.statement_mode = mode;
        self
    }
}

impl Default for AuditLogConfig {
    fn default() -> Self {
        AuditLogConfig {
            schema: "tollgate".to_owned(),
            queue_capacity: 10_000,
            batch_size: 500,
            shutdown_timeout: Duration::from_secs(30),
            statement_mode: StatementMode::Prepared,
        }
    }
}

enum Command {
    Event(Box<AuditEvent>),
    Flush(oneshot::Sender<Result<(), Error>>),
}

/// Statements with the schema filled in.
#[derive(Debug)]
struct Statements {
    insert_batch: Query,
    insert_one: Query,
    page: Query,
    mode: StatementMode,
}

/// What the queue holds and what the writer did since start, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriterStats {
    /// Events (and flush requests) waiting in the queue.
    pub queued: usize,
    /// The queue's capacity: at `queued == capacity`, `record` waits.
    pub capacity: usize,
    /// Batches written.
    pub batches_written: u64,
    /// Events written through the queue.
    pub events_written: u64,
    /// Batch writes that failed (each is retried).
    pub batch_failures: u64,
}

#[derive(Debug, Default)]
struct WriterCounters {
    batches_written: AtomicU64,
    events_written: AtomicU64,
    batch_failures: AtomicU64,
}

/// The PostgreSQL audit log. See the module docs.
pub struct PostgresAuditLog {
    pool: deadpool_postgres::Pool,
    schema: String,
    statements: std::sync::Arc<Statements>,
    sender: Mutex<Option<mpsc::Sender<Command>>>,
    writer: Mutex<Option<JoinHandle<u64>>>,
    counters: std::sync::Arc<WriterCounters>,
}

impl fmt::Debug for PostgresAuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresAuditLog")
            .field("statements", &self.statements.page.text())
            .finish_non_exhaustive()
    }
}

fn db_error(error: impl Into<crate::BoxError>, transient: bool) -> Error {
    Error::Database {
        source: error.into(),
        transient,
    }
}

fn pg_error(error: tokio_postgres::Error) -> Error {
    backend_error(tollgate_backend::postgres::backend_error(error))
}

/// An error of the shared backend plumbing, keeping the backend's own error as the source (an
/// invalid schema name is the sink's: a setting, not the database).
fn backend_error(failed: tollgate_backend::Error) -> Error {
    match failed {
        tollgate_backend::Error::InvalidSchema(_) => Error::Sink(failed.into_source()),
        failed => {
            let transient = failed.is_transient();
            db_error(failed.into_source(), transient)
        }
    }
}

/// Schema names are spliced into SQL: only plain lower-case identifiers are accepted.
fn check_schema(schema: &str) -> Result<(), Error> {
    tollgate_backend::check_schema(schema)
        .map(drop)
        .map_err(backend_error)
}

fn pool_error(error: deadpool_postgres::PoolError) -> Error {
    db_error(error, true)
}

impl PostgresAuditLog {
    /// The DDL of the `audit_events` table and its index in `schema` (`[a-z_][a-z0-9_]*`, at
    /// most 63 bytes), idempotent (`IF NOT EXISTS`): for running with your own migrations,
    /// then [`open`](Self::open).
    pub fn migration(schema: &str) -> Result<String, Error> {
        check_schema(schema)?;
        // A table made before its key held the user gets (user_id, id), once.
        let widen =
            tollgate_backend::postgres::widen_primary_key(schema, "audit_events", "user_id, id");
        Ok(format!(
            "{}\n{widen}",
            sql::MIGRATE.replace("{schema}", schema)
        ))
    }

    /// Runs the [`migration`](Self::migration) and starts the writer task.
    ///
    /// The migration runs in one transaction under the advisory lock
    /// `pg_advisory_xact_lock(hashtext('tollgate-migrate:<schema>'))`, the lock every Tollgate
    /// migration of a schema takes, so processes starting together on a new database run them
    /// one after the other instead of racing on `CREATE … IF NOT EXISTS`.
    pub async fn start(
        pool: deadpool_postgres::Pool,
        config: AuditLogConfig,
    ) -> Result<Self, Error> {
        let schema = &config.schema;
        let ddl = Self::migration(schema)?;
        tollgate_backend::postgres::migrate(&pool, schema, &ddl)
            .await
            .map_err(backend_error)?;
        Self::open(pool, config)
    }

    /// Starts the writer task on a schema already migrated (see
    /// [`migration`](Self::migration)). Must be called within a tokio runtime.
    pub fn open(pool: deadpool_postgres::Pool, config: AuditLogConfig) -> Result<Self, Error> {
        let schema = &config.schema;
        check_schema(schema)?;
        let fill = |sql: &str, types: &[Type]| Query::new(sql.replace("{schema}", schema), types);
        let statements = std::sync::Arc::new(Statements {
            insert_batch: fill(sql::INSERT_BATCH, &BATCH_TYPES),
            insert_one: fill(sql::INSERT_ONE, &EventParams::TYPES),
            page: fill(sql::PAGE, &[Type::TEXT, Type::UUID, Type::INT8]),
            mode: config.statement_mode,
        });
        let (sender, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let counters = std::sync::Arc::new(WriterCounters::default());
        let writer = tokio::spawn(write_loop(
            Writer {
                pool: pool.clone(),
                statements: std::sync::Arc::clone(&statements),
                counters: std::sync::Arc::clone(&counters),
                batch_size: config.batch_size.max(1),
                shutdown_timeout: config.shutdown_timeout,
            },
            receiver,
        ));
        Ok(PostgresAuditLog {
            pool,
            schema: schema.to_owned(),
            statements,
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            counters,
        })
    }

    /// The queue's fill and the writer's counts (all zero after shutdown).
    pub fn stats(&self) -> WriterStats {
        let (queued, capacity) = self.sender.lock().as_ref().map_or((0, 0), |s| {
            (s.max_capacity() - s.capacity(), s.max_capacity())
        });
        WriterStats {
            queued,
            capacity,
            batches_written: self.counters.batches_written.load(Ordering::Relaxed),
            events_written: self.counters.events_written.load(Ordering::Relaxed),
            batch_failures: self.counters.batch_failures.load(Ordering::Relaxed),
        }
    }

    fn sender(&self) -> Result<mpsc::Sender<Command>, Error> {
        self.sender.lock().clone().ok_or(Error::Closed)
    }

    /// Writes `event` inside the caller's transaction (not through the queue): it commits or
    /// rolls back with the caller's own rows. The statement is prepared once per pooled
    /// connection (a pool transaction, for its statement cache).
    pub async fn record_in(
        &self,
        transaction: &deadpool_postgres::Transaction<'_>,
        event: &AuditEvent,
    ) -> Result<(), Error> {
        let params = EventParams::new(event);
        let statements = &self.statements;
        (statements.insert_one)
            .execute(
                statements.mode,
                On::Transaction(transaction),
                &params.as_params(),
            )
            .await
            .map(|_| ())
            .map_err(pg_error)
    }

    /// An `INSERT … SELECT` of one event whose 11 parameters start at `$first`, for writing the
    /// event in the *same statement* as your own rows (as a data-modifying `WITH` clause, or the
    /// statement's last part): atomic with them, and one round trip instead of a transaction's
    /// three. Append `WHERE …` to make it conditional. Bind [`EventParams::as_params`] at
    /// `$first`.
    ///
    /// ```
    /// # fn example(log: &tollgate_audit::postgres::PostgresAuditLog) {
    /// // $1–$11 for the event, then $12 for the caller's row.
    /// let sql = format!(
    ///     "WITH p AS (INSERT INTO shop.orders (id) VALUES ($12)) {}",
    ///     log.insert_select_statement(1)
    /// );
    /// # let _ = sql; }
    /// ```
    pub fn insert_select_statement(&self, first: usize) -> String {
        insert_select(&self.schema, first)
    }

    /// [`insert_select_statement`](Self::insert_select_statement) for `schema`, without a log:
    /// for a migration that composes it (into a function, say).
    pub fn insert_select_statement_in(schema: &str, first: usize) -> Result<String, Error> {
        check_schema(schema)?;
        Ok(insert_select(schema, first))
    }

    /// The `INSERT … SELECT` of one event for each row of the relation `from` (a table, a
    /// `WITH` clause, `unnest(…) AS i(…)` of arrays you bind): what
    /// [`insert_select_statement`](Self::insert_select_statement) does for one event, in one
    /// statement for many. `values` are the event's 11 values in [`EventParams`] order (id,
    /// occurred at, user, action, outcome, status code, idempotency key, transaction id,
    /// request id, latency µs, fields), as SQL expressions over `from`'s columns.
    ///
    /// ```
    /// use tollgate_audit::postgres::PostgresAuditLog;
    ///
    /// // The events of the orders a statement's `WITH o AS (INSERT … RETURNING …)` wrote.
    /// let values = [
    ///     "o.event_id", "now()", "o.user_id", "'order.created'", "'success'", "NULL",
    ///     "NULL", "o.id", "NULL", "NULL", "'{}'::jsonb",
    /// ];
    /// let sql = PostgresAuditLog::insert_many_statement_in("shop", "o", &values)?;
    /// assert!(sql.ends_with("FROM o"));
    /// # Ok::<(), tollgate_audit::Error>(())
    /// ```
    pub fn insert_many_statement_in(
        schema: &str,
        from: &str,
        values: &[&str; EventParams::COUNT],
    ) -> Result<String, Error> {
        check_schema(schema)?;
        Ok(params::insert_rows(schema, from, values))
    }

    /// Stops accepting events, writes everything already accepted, and stops the writer.
    /// Fails with [`Error::Unwritten`] if the database stayed unreachable past the configured
    /// shutdown timeout.
    pub async fn shutdown(&self) -> Result<(), Error> {
        drop(self.sender.lock().take());
        let writer = self.writer.lock().take();
        let Some(writer) = writer else {
            return Ok(());
        };
        match writer.await {
            Ok(0) => Ok(()),
            Ok(unwritten) => Err(Error::Unwritten(unwritten)),
            Err(join) => Err(Error::Sink(Box::new(join))),
        }
    }
}

#[async_trait]
impl AuditSink for PostgresAuditLog {
    async fn record(&self, event: AuditEvent) -> Result<(), Error> {
        self.sender()?
            .send(Command::Event(Box::new(event)))
            .await
            .map_err(|_| Error::Closed)
    }

    async fn flush(&self) -> Result<(), Error> {
        let (done, wait) = oneshot::channel();
        self.sender()?
            .send(Command::Flush(done))
            .await
            .map_err(|_| Error::Closed)?;
        wait.await.map_err(|_| Error::Closed)?
    }
}

#[async_trait]
impl AuditLog for PostgresAuditLog {
    async fn page(&self, user_id: &str, request: PageRequest) -> Result<Page, Error> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let fetch = i64::try_from(request.limit() + 1).unwrap_or(i64::MAX);
        let statements = &self.statements;
        let params: [&(dyn ToSql + Sync); 3] = [&user_id, &request.before(), &fetch];
        let rows = (statements.page)
            .rows(statements.mode, On::Client(&client), &params)
            .await
            .map_err(pg_error)?;
        let entries = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(entries, request.limit()))
    }
}

fn event_from_row(row: &Row) -> Result<AuditEvent, Error> {
    let get = |e: tokio_postgres::Error| db_error(e, false);
    let outcome: String = row.try_get("outcome").map_err(get)?;
    let fields: serde_json::Value = row.try_get("fields").map_err(get)?;
    let status: Option<i32> = row.try_get("status_code").map_err(get)?;
    let latency: Option<i64> = row.try_get("latency_us").map_err(get)?;
    Ok(AuditEvent {
        id: row.try_get::<_, Uuid>("id").map_err(get)?,
        timestamp: row.try_get("occurred_at").map_err(get)?,
        user_id: row.try_get("user_id").map_err(get)?,
        action: Action::custom(row.try_get::<_, String>("action").map_err(get)?),
        outcome: Outcome::parse(&outcome)
            .ok_or_else(|| db_error(format!("unknown outcome {outcome:?}"), false))?,
        status_code: status.and_then(|s| u16::try_from(s).ok()),
        idempotency_key: row.try_get("idempotency_key").map_err(get)?,
        transaction_id: row.try_get("transaction_id").map_err(get)?,
        request_id: row.try_get("request_id").map_err(get)?,
        latency_us: latency.and_then(|l| u64::try_from(l).ok()),
        fields: match fields {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        },
    })
}

/// What the writer task needs.
struct Writer {
    pool: deadpool_postgres::Pool,
    statements: std::sync::Arc<Statements>,
    counters: std::sync::Arc<WriterCounters>,
    batch_size: usize,
    shutdown_timeout: Duration,
}

/// Drains the queue in batches until every sender is gone; returns how many accepted events
/// could not be written (non-zero only when shutdown's deadline passed with the database down).
async fn write_loop(writer: Writer, mut receiver: mpsc::Receiver<Command>) -> u64 {
    let Writer {
        pool,
        statements,
        counters,
        batch_size,
        shutdown_timeout,
    } = writer;
    let mut batch: Vec<AuditEvent> = Vec::with_capacity(batch_size);
    let mut waiting: Vec<oneshot::Sender<Result<(), Error>>> = Vec::new();
    let mut unwritten = 0;
    while let Some(first) = receiver.recv().await {
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Event(event) => batch.push(*event),
                Command::Flush(done) => waiting.push(done),
            }
            if batch.len() < batch_size {
                next = receiver.try_recv().ok();
            }
        }
        // Retry the batch until it is written; once every sender is gone (shutdown), give the
        // database `shutdown_timeout` more and then count what is left.
        let mut delay = Duration::from_millis(50);
        let mut deadline: Option<Instant> = None;
        let result = loop {
            let insert = insert_batch(&pool, &statements, &batch);
            match crate::telemetry::write("postgresql", batch.len(), insert).await {
                Ok(()) => {
                    if !batch.is_empty() {
                        counters.batches_written.fetch_add(1, Ordering::Relaxed);
                        counters
                            .events_written
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    }
                    break Ok(());
                }
                Err(error) => {
                    counters.batch_failures.fetch_add(1, Ordering::Relaxed);
                    if receiver.is_closed() && receiver.is_empty() {
                        let limit =
                            *deadline.get_or_insert_with(|| Instant::now() + shutdown_timeout);
                        if Instant::now() >= limit {
                            unwritten += batch.len() as u64;
                            crate::telemetry::dropped("postgresql", batch.len() as u64);
                            break Err(error);
                        }
                    }
                    tracing::warn!(
                        error = %crate::error::chain(&error),
                        events = batch.len(),
                        "audit batch not written; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        batch.clear();
        crate::telemetry::queue_depth(receiver.len());
        for done in waiting.drain(..) {
            let _ = done.send(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| Error::Sink(crate::error::chain(e).into())),
            );
        }
    }
    unwritten
}

async fn insert_batch(
    pool: &deadpool_postgres::Pool,
    statements: &Statements,
    batch: &[AuditEvent],
) -> Result<(), Error> {
    if batch.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = batch.iter().map(|e| e.id).collect();
    let times: Vec<std::time::SystemTime> = batch.iter().map(|e| e.timestamp).collect();
    let users: Vec<&str> = batch.iter().map(|e| e.user_id.as_str()).collect();
    let actions: Vec<&str> = batch.iter().map(|e| e.action.as_str()).collect();
    let outcomes: Vec<&str> = batch.iter().map(|e| e.outcome.as_str()).collect();
    let statuses: Vec<Option<i32>> = batch.iter().map(|e| e.status_code.map(i32::from)).collect();
    let keys: Vec<Option<&str>> = batch.iter().map(|e| e.idempotency_key.as_deref()).collect();
    let transactions: Vec<Option<&str>> =
        batch.iter().map(|e| e.transaction_id.as_deref()).collect();
    let requests: Vec<Option<&str>> = batch.iter().map(|e| e.request_id.as_deref()).collect();
    let latencies: Vec<Option<i64>> = batch
        .iter()
        .map(|e| e.latency_us.map(|us| i64::try_from(us).unwrap_or(i64::MAX)))
        .collect();
    let fields: Vec<serde_json::Value> = batch
        .iter()
        .map(|e| serde_json::Value::Object(e.fields.clone()))
        .collect();
    let client = pool.get().await.map_err(pool_error)?;
    (statements.insert_batch)
        .execute(
            statements.mode,
            On::Client(&client),
            &[
                &ids,
                &times,
                &users,
                &actions,
                &outcomes,
                &statuses,
                &keys,
                &transactions,
                &requests,
                &latencies,
                &fields,
            ],
        )
        .await
        .map(|_| ())
        .map_err(pg_error)
}
