//! [`GroupCommit`]: the statements of concurrent callers written together — one transaction,
//! the statements pipelined on one connection, one commit — so that many small writes pay for
//! one commit and one round trip's wait instead of one each.
//!
//! A statement arriving while every writer is busy waits for the next batch; one arriving at
//! an idle writer is sent at once, alone, as an ordinary autocommit statement: no timer, no
//! added latency when the system is quiet. A batch holds at most `max_batch` statements.
//!
//! Each caller gets its own statement's rows, as if it had run alone:
//! - statements of one batch run in order in one transaction, so a later one sees an earlier
//!   one's writes (two inserts of the same key: the second conflicts, as it would after the
//!   first's commit);
//! - when a statement of a batch fails, the transaction is rolled back (nothing of it was
//!   written) and every statement of the batch is sent again alone: the failing one gets its
//!   own error, the others their rows;
//! - when the commit itself fails, whether it happened is unknown: every caller of the batch
//!   gets that error, as a caller whose lone statement lost its connection would;
//! - a caller that stops waiting before its batch is sent is left out of it.
//!
//! Parameters are encoded to PostgreSQL's binary format when a statement is submitted, so the
//! caller's values need not outlive the call.
//!
//! # Example
//!
//! ```no_run
//! # async fn example(pool: deadpool_postgres::Pool) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tokio_postgres::types::Type;
//! use tollgate_backend::group_commit::{GroupCommit, GroupCommitConfig};
//! use tollgate_backend::postgres::{Query, StatementMode};
//!
//! let writes = GroupCommit::new(pool, StatementMode::Prepared, GroupCommitConfig::default());
//! let insert = Arc::new(Query::new(
//!     "INSERT INTO shop.orders (id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING id",
//!     &[Type::TEXT],
//! ));
//! let rows = writes.rows(&insert, &[&"order-1"]).await?;
//! assert_eq!(rows.len(), 1, "inserted");
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::Row;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use crate::Error;
use crate::postgres::{On, Query, StatementMode, backend_error, is_transient};

/// How statements are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupCommitConfig {
    /// The most statements in one transaction (1: every statement alone).
    pub max_batch: usize,
    /// Transactions in flight at once, each on a pooled connection of its own.
    pub writers: usize,
}

impl Default for GroupCommitConfig {
    /// Up to 32 statements a transaction, four transactions at once.
    fn default() -> Self {
        GroupCommitConfig {
            max_batch: 32,
            writers: 4,
        }
    }
}

impl GroupCommitConfig {
    /// At most `max_batch` statements a transaction (at least 1).
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// `writers` transactions in flight at once (at least 1).
    pub fn writers(mut self, writers: usize) -> Self {
        self.writers = writers.max(1);
        self
    }
}

type Observer = Arc<dyn Fn(usize) + Send + Sync>;

/// Writes the statements of concurrent callers in shared transactions. Cloning shares the
/// writers, which stop when the last clone is dropped. See the [module](self) documentation.
#[derive(Clone)]
pub struct GroupCommit {
    jobs: mpsc::UnboundedSender<Job>,
}

impl fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

/// One caller's statement, its parameters already encoded, and where its answer goes.
struct Job {
    query: Arc<Query>,
    params: Vec<Encoded>,
    reply: oneshot::Sender<Result<Vec<Row>, Error>>,
}

/// The queue the writers share: one at a time takes what is waiting.
type Queue = Arc<Mutex<mpsc::UnboundedReceiver<Job>>>;

impl GroupCommit {
    /// Starts `config.writers` writers on `pool` (on the current tokio runtime).
    pub fn new(
        pool: deadpool_postgres::Pool,
        mode: StatementMode,
        config: GroupCommitConfig,
    ) -> Self {
        GroupCommit::observed(pool, mode, config, Arc::new(|_| {}))
    }

    /// [`new`](Self::new), calling `observe` with the size of every transaction written (1 for
    /// a statement sent alone): for a metric of batch sizes.
    pub fn observed(
        pool: deadpool_postgres::Pool,
        mode: StatementMode,
        config: GroupCommitConfig,
        observe: Observer,
    ) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        let queue: Queue = Arc::new(Mutex::new(queue));
        for _ in 0..config.writers.max(1) {
            let writer = Writer {
                pool: pool.clone(),
                mode,
                max_batch: config.max_batch.max(1),
                observe: Arc::clone(&observe),
            };
            tokio::spawn(writer.run(Arc::clone(&queue)));
        }
        GroupCommit { jobs }
    }

    /// `query`'s rows for `params`, written with whatever other statements are waiting.
    pub async fn rows(
        &self,
        query: &Arc<Query>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        // A value that does not fit its placeholder's type is the caller's bug, never transient.
        let params = encode(query.types(), params).map_err(|e| Error::backend(e, false))?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            query: Arc::clone(query),
            params,
            reply,
        };
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> Error {
    Error::backend("the group-commit writers stopped", true)
}

/// A parameter in PostgreSQL's binary format (or NULL), bound as it is.
#[derive(Clone, Debug)]
struct Encoded(Option<Bytes>);

impl ToSql for Encoded {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Some(bytes) => {
                out.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    /// Checked when it was encoded, against the statement's own type.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn encode(types: &[Type], params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Encoded>, crate::BoxError> {
    if types.len() != params.len() {
        return Err(format!(
            "{} parameters for {} placeholders",
            params.len(),
            types.len()
        )
        .into());
    }
    let mut encoded = Vec::with_capacity(params.len());
    for (param, ty) in params.iter().zip(types) {
        let mut buffer = BytesMut::new();
        encoded.push(match param.to_sql_checked(ty, &mut buffer)? {
            IsNull::Yes => Encoded(None),
            IsNull::No => Encoded(Some(buffer.freeze())),
        });
    }
    Ok(encoded)
}

struct Writer {
    pool: deadpool_postgres::Pool,
    mode: StatementMode,
    max_batch: usize,
    observe: Observer,
}

impl Writer {
    async fn run(self, queue: Queue) {
        loop {
            let mut batch = Vec::new();
            {
                let mut waiting = queue.lock().await;
                match waiting.recv().await {
                    Some(first) => batch.push(first),
                    None => return,
                }
                while batch.len() < self.max_batch {
                    match waiting.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
            }
            // A caller that stopped waiting is left out: nothing it asked for is written.
            batch.retain(|job| !job.reply.is_closed());
            match batch.len() {
                0 => {}
                1 => {
                    (self.observe)(1);
                    self.alone(batch).await;
                }
                size => {
                    (self.observe)(size);
                    self.together(batch).await;
                }
            }
        }
    }

    /// Each job as a statement of its own (autocommit), one after the other; a caller that
    /// stopped waiting meanwhile (its batch failed) is left out.
    async fn alone(&self, mut batch: Vec<Job>) {
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            return;
        }
        let client = match self.pool.get().await {
            Ok(client) => client,
            Err(error) => return fail_all(batch, Shared::new(error), true),
        };
        for job in batch {
            let params = as_params(&job.params);
            let rows = job
                .query
                .rows(self.mode, On::Client(&client), &params)
                .await;
            let _ = job.reply.send(rows.map_err(backend_error));
        }
    }

    /// The jobs in one transaction, pipelined; alone, if a statement of it fails.
    async fn together(&self, batch: Vec<Job>) {
        let mut client = match self.pool.get().await {
            Ok(client) => client,
            Err(error) => return fail_all(batch, Shared::new(error), true),
        };
        let outcome = {
            let Ok(transaction) = client.transaction().await else {
                drop(client);
                return self.alone(batch).await;
            };
            let statements = batch.iter().map(|job| {
                let params = as_params(&job.params);
                let query = Arc::clone(&job.query);
                let on = On::Transaction(&transaction);
                async move { query.rows(self.mode, on, &params).await }
            });
            // Polled together, tokio-postgres sends them back to back on the connection.
            let results = futures_util::future::join_all(statements).await;
            if results.iter().any(Result::is_err) {
                Err(())
            } else {
                let rows: Vec<Vec<Row>> = results.into_iter().filter_map(Result::ok).collect();
                Ok((transaction.commit().await, rows))
            }
        };
        drop(client);
        match outcome {
            // Rolled back: nothing of the batch was written; each statement goes again alone.
            Err(_) => self.alone(batch).await,
            Ok((Ok(()), rows)) => {
                for (job, rows) in batch.into_iter().zip(rows) {
                    let _ = job.reply.send(Ok(rows));
                }
            }
            // Whether the commit happened is unknown: every caller hears so.
            Ok((Err(error), _)) => {
                let transient = is_transient(&error);
                fail_all(batch, Shared::new(error), transient);
            }
        }
    }
}

fn as_params(params: &[Encoded]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// Answers every job with `error` (a connection that could not be had, or a commit whose
/// outcome is unknown).
fn fail_all<E: std::error::Error + Send + Sync + 'static>(
    batch: Vec<Job>,
    error: Shared<E>,
    transient: bool,
) {
    for job in batch {
        let _ = job
            .reply
            .send(Err(Error::backend(error.clone(), transient)));
    }
}

/// One error, the source of every caller's: a batch fails together only at its connection or
/// its commit.
#[derive(Debug)]
struct Shared<E>(Arc<E>);

impl<E> Shared<E> {
    fn new(error: E) -> Self {
        Shared(Arc::new(error))
    }
}

impl<E> Clone for Shared<E> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<E: fmt::Display> fmt::Display for Shared<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: std::error::Error> std::error::Error for Shared<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}
