//! [`GroupCommit`]: the statements of concurrent callers written together — one transaction
//! sent in one flight on one connection (`BEGIN`, the statements, `COMMIT` back to back), one
//! commit — so that many small writes pay for one commit and one round trip instead of one
//! each.
//!
//! While few statements are in flight (at most [`GroupCommitConfig::alone_up_to`], 4 by
//! default) and no batch is being written, a statement is sent at once by its caller, alone, as
//! an ordinary autocommit statement on a connection of its own: at low concurrency statements
//! run side by side, as they would without grouping. Under more load a statement goes to the
//! writers: one finding a writer idle is sent at once, the others wait for the next batch. There
//! is no timer, so nothing waits when the system is quiet. A batch holds at most `max_batch`
//! statements.
//!
//! Each writer keeps the connection it wrote its last batch on for the next (unless the pool has
//! no more connections than there are writers): a batch on the backend that ran the one before
//! costs measurably less than on another, whose caches are cold. A kept connection found broken
//! is dropped, and the writer takes another from the pool.
//!
//! Each caller gets its own statement's rows, as if it had run alone:
//! - statements of one batch run one after the other in one transaction, each seeing the
//!   writes of those before it (two inserts of the same key: whichever runs second conflicts,
//!   as it would after the other's commit), in an order as arbitrary as concurrent callers';
//! - when a statement of a batch fails, the transaction is rolled back (nothing of it was
//!   written) and every statement of the batch is sent again alone: the failing one gets its
//!   own error, the others their rows;
//! - when the commit itself fails, whether it happened is unknown: every caller of the batch
//!   gets that error, as a caller whose lone statement lost its connection would;
//! - a caller that stops waiting before its batch is sent is left out of it (one that stops
//!   waiting after its statement was sent, in a batch or alone, may or may not have had it
//!   written, as with any statement).
//!
//! Parameters of a statement that goes to the writers are encoded to PostgreSQL's binary format
//! when it is submitted, so the caller's values need not outlive the call; a value that does not
//! fit its placeholder's type is refused before anything is sent, on either path.
//!
//! # One statement for many callers
//!
//! A statement pipelined in a shared transaction still costs the database a statement each:
//! its parse, bind and executor start-up. A [`Batched`] statement also has a *many* form that
//! writes the rows of every caller of a batch at once, its parameters arrays with one element
//! per caller ([`callers`] turns them into rows). The callers submitted with
//! [`GroupCommit::batch_rows`] share one execution of it; each still gets its own rows, as
//! the *one* form would have given them. Two callers that would touch the same rows (equal
//! leading parameters, the statement's key) never share an execution: each runs in a
//! statement of its own, one after the other, as two concurrent callers' statements would.
//!
//! A transaction that runs a shared execution is planned with nested loops over indexes only
//! (`SET LOCAL enable_seqscan = off`, and hash and merge joins off), so the *many* forms should
//! reach each caller's rows by an index. Statements are prepared once per connection: a plan
//! chosen while the tables were nearly empty would otherwise keep scanning them whole as they
//! grow. A statement submitted alone ([`GroupCommit::rows`]) that lands in such a transaction
//! is planned the same way.
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

mod batched;
mod encoded;
mod job;
mod writer;

use std::fmt;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

pub use batched::{Batched, callers};
pub use job::Written;

use crate::Error;
use crate::postgres::{On, Query, StatementMode, backend_error};
use encoded::encode;
use job::{Job, Load, Observer, Queue, Statement};
use writer::Writer;

/// How statements are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupCommitConfig {
    /// The most statements in one transaction (1: every statement alone).
    pub max_batch: usize,
    /// Transactions in flight at once, each on a pooled connection of its own.
    pub writers: usize,
    /// While no more than this many statements are in flight in all (queued, in a batch or
    /// sent alone) and no batch is being written, a statement is sent at once by its caller,
    /// alone, on a pooled connection of its own (0: every statement goes through the writers).
    pub alone_up_to: usize,
}

impl Default for GroupCommitConfig {
    /// Up to 32 statements a transaction, one transaction at a time, statements sent alone
    /// while at most 4 are in flight.
    fn default() -> Self {
        GroupCommitConfig {
            max_batch: 32,
            writers: 1,
            alone_up_to: 4,
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

    /// Statements sent alone while at most `alone_up_to` are in flight and no batch is being
    /// written (0: never).
    pub fn alone_up_to(mut self, alone_up_to: usize) -> Self {
        self.alone_up_to = alone_up_to;
        self
    }
}

/// Writes the statements of concurrent callers in shared transactions. Cloning shares the
/// writers, which stop when the last clone is dropped. See the [module](self) documentation.
#[derive(Clone)]
pub struct GroupCommit {
    jobs: mpsc::UnboundedSender<Job>,
    load: Arc<Load>,
    alone: Alone,
}

/// How to send a statement alone, outside the writers.
#[derive(Clone)]
struct Alone {
    pool: deadpool_postgres::Pool,
    mode: StatementMode,
    up_to: usize,
    observe: Observer,
}

impl fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Starts `config.writers` writers on `pool` (on the current tokio runtime); each keeps one
    /// of its connections while `pool` has more than `config.writers`.
    pub fn new(
        pool: deadpool_postgres::Pool,
        mode: StatementMode,
        config: GroupCommitConfig,
    ) -> Self {
        GroupCommit::observed(pool, mode, config, Arc::new(|_| {}))
    }

    /// [`new`](Self::new), calling `observe` with every transaction written, its size and who
    /// sent it: for a metric of batch sizes.
    pub fn observed(
        pool: deadpool_postgres::Pool,
        mode: StatementMode,
        config: GroupCommitConfig,
        observe: Observer,
    ) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        let queue: Queue = Arc::new(Mutex::new(queue));
        let load = Arc::new(Load::default());
        let writers = config.writers.max(1);
        // Each writer keeps a connection, if that leaves the pool one for everything else.
        let keep = pool.status().max_size > writers;
        for _ in 0..writers {
            let writer = Writer {
                pool: pool.clone(),
                mode,
                max_batch: config.max_batch.max(1),
                observe: Arc::clone(&observe),
                load: Arc::clone(&load),
                keep,
            };
            tokio::spawn(writer.run(Arc::clone(&queue)));
        }
        let alone = Alone {
            pool,
            mode,
            up_to: config.alone_up_to,
            observe,
        };
        GroupCommit { jobs, load, alone }
    }

    /// `query`'s rows for `params`: sent at once, alone, while few statements are in flight
    /// and no batch is being written, otherwise written with whatever other statements wait.
    pub async fn rows(
        &self,
        query: &Arc<Query>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        self.submit(Statement::One(Arc::clone(query)), params).await
    }

    /// `statement`'s rows for `params`, sent alone or with whatever other statements wait, as
    /// [`rows`](Self::rows) says: in a batch, in one execution of its `many` form with the other
    /// callers of the same statement when there are some (each row then has the position column
    /// last); its `one` form otherwise.
    pub async fn batch_rows(
        &self,
        statement: &Arc<Batched>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        self.submit(Statement::Batched(Arc::clone(statement)), params)
            .await
    }

    async fn submit(
        &self,
        statement: Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        // Counted until answered (or given up): the statements in flight, this one included.
        let in_flight = self.load.enter();
        if in_flight.count() <= self.alone.up_to && !self.load.writing() {
            return self.alone(statement.one(), params).await;
        }
        // A value that does not fit its placeholder's type is the caller's bug, never transient.
        let params = encode(statement.one().types(), params);
        let params = params.map_err(|e| Error::backend(e, false))?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            statement,
            params,
            reply,
        };
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// `query` sent at once on a connection of its own, as an autocommit statement (its
    /// parameters are encoded by the driver, as for any statement).
    async fn alone(
        &self,
        query: &Query,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        (self.alone.observe)(Written {
            statements: 1,
            by_caller: true,
        });
        let client = self.alone.pool.get().await;
        let client = client.map_err(|e| Error::backend(e, true))?;
        let rows = query
            .rows(self.alone.mode, On::Client(&client), params)
            .await;
        rows.map_err(backend_error)
    }
}

fn stopped() -> Error {
    Error::backend("the group-commit writers stopped", true)
}
