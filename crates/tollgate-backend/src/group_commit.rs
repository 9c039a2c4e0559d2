//! [`GroupCommit`]: the statements of concurrent callers written together — one transaction
//! sent in one flight on one connection (`BEGIN`, the statements, `COMMIT` back to back), one
//! commit — so that many small writes pay for one commit and one round trip instead of one
//! each.
//!
//! A statement arriving while every writer is busy waits for the next batch; one arriving at
//! an idle writer is sent at once, alone, as an ordinary autocommit statement: no timer, no
//! added latency when the system is quiet. A batch holds at most `max_batch` statements.
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
//! - a caller that stops waiting before its batch is sent is left out of it.
//!
//! Parameters are encoded to PostgreSQL's binary format when a statement is submitted, so the
//! caller's values need not outlive the call.
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

use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
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
    /// Up to 32 statements a transaction, one transaction at a time.
    fn default() -> Self {
        GroupCommitConfig {
            max_batch: 32,
            writers: 1,
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
    statement: Statement,
    params: Vec<Encoded>,
    reply: oneshot::Sender<Result<Vec<Row>, Error>>,
}

/// What a caller submitted: a statement of its own, or one a batch may run for many.
enum Statement {
    One(Arc<Query>),
    Batched(Arc<Batched>),
}

impl Statement {
    /// The statement for this caller alone.
    fn one(&self) -> &Query {
        match self {
            Statement::One(query) => query,
            Statement::Batched(batched) => &batched.one,
        }
    }
}

/// A statement with a second form that does the same for many callers in one execution. See
/// [One statement for many callers](self#one-statement-for-many-callers).
#[derive(Debug)]
pub struct Batched {
    one: Query,
    many: Query,
    key: usize,
}

impl Batched {
    /// `one`, and `many`: the same writes for every caller of a batch at once.
    ///
    /// `many`'s parameter `$k` is an array of `one`'s `$k`, one element per caller in the
    /// batch's order ([`callers`] makes them rows). It returns the rows `one` would have
    /// returned to each caller, with one more column last: the caller's position in the
    /// batch (`int8`, from 1). The first `key` parameters identify the rows a caller's `one`
    /// touches: callers whose are equal never share an execution of `many`.
    ///
    /// Fails if a parameter type has no array type known here (the built-in scalars have).
    pub fn new(one: Query, many: impl Into<String>, key: usize) -> Result<Self, Error> {
        let types = one
            .types()
            .iter()
            .map(|ty| {
                array_of(ty).ok_or_else(|| {
                    let what = format!("no array type for parameters of type {ty}");
                    Error::backend(what, false)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let many = Query::new(many, &types);
        Ok(Batched { one, many, key })
    }

    /// The form for one caller.
    pub fn one(&self) -> &Query {
        &self.one
    }

    /// The form for many.
    pub fn many(&self) -> &Query {
        &self.many
    }
}

/// The callers of a batch as rows, for a [`Batched`] statement's `many` form:
/// `unnest($1::text[], …) WITH ORDINALITY AS {alias}(p1, …, pN, n)`, where column `pK` holds
/// a caller's `$K` (of `types`, the `one` form's parameter types) and `n` its position.
pub fn callers(types: &[Type], alias: &str) -> String {
    let arrays: Vec<String> = (types.iter().enumerate())
        .map(|(i, ty)| format!("${}::{}[]", i + 1, crate::postgres::sql_type(ty)))
        .collect();
    let columns: Vec<String> = (1..=types.len()).map(|k| format!("p{k}")).collect();
    format!(
        "unnest({}) WITH ORDINALITY AS {alias}({}, n)",
        arrays.join(", "),
        columns.join(", ")
    )
}

/// The array type whose elements are `ty`, for the scalar types PostgreSQL has built in.
fn array_of(ty: &Type) -> Option<Type> {
    let array = match *ty {
        Type::BOOL => Type::BOOL_ARRAY,
        Type::INT2 => Type::INT2_ARRAY,
        Type::INT4 => Type::INT4_ARRAY,
        Type::INT8 => Type::INT8_ARRAY,
        Type::FLOAT4 => Type::FLOAT4_ARRAY,
        Type::FLOAT8 => Type::FLOAT8_ARRAY,
        Type::NUMERIC => Type::NUMERIC_ARRAY,
        Type::TEXT => Type::TEXT_ARRAY,
        Type::VARCHAR => Type::VARCHAR_ARRAY,
        Type::BYTEA => Type::BYTEA_ARRAY,
        Type::JSON => Type::JSON_ARRAY,
        Type::JSONB => Type::JSONB_ARRAY,
        Type::UUID => Type::UUID_ARRAY,
        Type::DATE => Type::DATE_ARRAY,
        Type::TIMESTAMP => Type::TIMESTAMP_ARRAY,
        Type::TIMESTAMPTZ => Type::TIMESTAMPTZ_ARRAY,
        _ => return None,
    };
    Some(array)
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
        self.submit(Statement::One(Arc::clone(query)), params).await
    }

    /// `statement`'s rows for `params`, written with whatever other statements are waiting:
    /// in one execution of its `many` form with the other callers of the same statement when
    /// there are some (each row then has the position column last), alone otherwise.
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
}

fn stopped() -> Error {
    Error::backend("the group-commit writers stopped", true)
}

/// A parameter in PostgreSQL's binary format (or NULL), bound as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// One parameter of a batch's callers, as a one-dimensional array of their encoded values.
struct EncodedArray<'a> {
    element: &'a Type,
    values: Vec<&'a Encoded>,
}

impl fmt::Debug for EncodedArray<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedArray")
            .field("element", self.element)
            .field("len", &self.values.len())
            .finish()
    }
}

impl ToSql for EncodedArray<'_> {
    /// PostgreSQL's binary array: dimensions, whether any element is NULL, the element type,
    /// the length and lower bound, then each element as its length (-1: NULL) and its bytes.
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let len = i32::try_from(self.values.len())?;
        let has_null = self.values.iter().any(|value| value.0.is_none());
        out.put_i32(1);
        out.put_i32(i32::from(has_null));
        out.put_u32(self.element.oid());
        out.put_i32(len);
        out.put_i32(1);
        for value in &self.values {
            match &value.0 {
                Some(bytes) => {
                    out.put_i32(i32::try_from(bytes.len())?);
                    out.extend_from_slice(bytes);
                }
                None => out.put_i32(-1),
            }
        }
        Ok(IsNull::No)
    }

    /// Its elements were checked against the `one` form's types when they were encoded.
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
            let rows = (job.statement.one())
                .rows(self.mode, On::Client(&client), &params)
                .await;
            let _ = job.reply.send(rows.map_err(backend_error));
        }
    }

    /// The jobs in one transaction, sent in one flight (`BEGIN`, the statements, `COMMIT`,
    /// back to back on the connection; callers of one [`Batched`] statement sharing an
    /// execution); alone, if a statement of it fails.
    async fn together(&self, batch: Vec<Job>) {
        let client = match self.pool.get().await {
            Ok(client) => client,
            Err(error) => return fail_all(batch, Shared::new(error), true),
        };
        let plan = plan(&batch);
        // Prepared first (cached after the first batch), so that no statement below waits
        // for anything before it is sent, and they go out in order.
        for step in &plan {
            if step
                .query(&batch)
                .prepare(self.mode, &client)
                .await
                .is_err()
            {
                drop(client);
                return self.alone(batch).await;
            }
        }
        let begin = if plan.iter().any(Step::is_shared) {
            BEGIN_KEYED
        } else {
            "BEGIN"
        };
        let on = On::Client(&client);
        let statements = plan.iter().map(|step| step.run(&batch, self.mode, on));
        // tokio-postgres sends a request when its future is first polled, and `join3` and
        // `join_all` poll in order: `BEGIN`, the statements and `COMMIT` leave in that order,
        // in one flight, and their answers come back together.
        let (begun, results, committed) = futures_util::future::join3(
            client.batch_execute(begin),
            futures_util::future::join_all(statements),
            client.batch_execute("COMMIT"),
        )
        .await;
        let answers = answers(&batch, &plan, results);
        match (begun, answers, committed) {
            (Ok(()), Ok(answers), Ok(())) => {
                for (job, rows) in batch.into_iter().zip(answers) {
                    let _ = job.reply.send(Ok(rows));
                }
            }
            // Nothing of the batch was written: each statement goes again alone.
            (Ok(()), Err(Unanswered::RolledBack), Ok(())) => {
                drop(client);
                self.alone(batch).await;
            }
            (Ok(()), Err(Unanswered::Unplaced), Ok(())) => {
                let unplaced = "a batched statement returned a row without its caller's position";
                for job in batch {
                    let _ = job.reply.send(Err(Error::backend(unplaced, false)));
                }
            }
            // Whether the commit happened is unknown: every caller hears so.
            (Err(error), _, _) | (_, _, Err(error)) => {
                let transient = is_transient(&error);
                fail_all(batch, Shared::new(error), transient);
            }
        }
    }
}

/// Opens a transaction whose [`Batched`] statements are planned as what they are: a few
/// callers, each reaching its own rows by key. A plan made while the tables were small, and
/// cached for the connection's life, would otherwise scan whole tables once they are not:
/// nested loops over indexes are the only plan left.
const BEGIN_KEYED: &str = "BEGIN; SET LOCAL enable_seqscan = off; \
    SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off";

/// One statement of a shared transaction: a job's own, or a [`Batched`] statement's `many`
/// form for several jobs (indices into the batch) whose keys differ.
struct Step {
    many: Option<Arc<Batched>>,
    jobs: Vec<usize>,
}

impl Step {
    /// Whether callers share this execution.
    fn is_shared(&self) -> bool {
        self.many.is_some() && self.jobs.len() > 1
    }

    /// The statement this step sends.
    fn query<'a>(&'a self, batch: &'a [Job]) -> &'a Query {
        match &self.many {
            Some(batched) if self.is_shared() => &batched.many,
            _ => batch[self.jobs[0]].statement.one(),
        }
    }

    async fn run(
        &self,
        batch: &[Job],
        mode: StatementMode,
        on: On<'_>,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let shared = self.many.as_ref().filter(|_| self.is_shared());
        let Some(batched) = shared else {
            let job = &batch[self.jobs[0]];
            let params = as_params(&job.params);
            return job.statement.one().rows(mode, on, &params).await;
        };
        let arrays: Vec<EncodedArray<'_>> = (batched.one.types().iter().enumerate())
            .map(|(k, element)| EncodedArray {
                element,
                values: (self.jobs.iter())
                    .map(|&job| &batch[job].params[k])
                    .collect(),
            })
            .collect();
        let params: Vec<&(dyn ToSql + Sync)> =
            arrays.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        batched.many.rows(mode, on, &params).await
    }
}

/// The batch's statements, in its order: each job of a [`Batched`] statement joins the first
/// execution of it that holds no job with the same key, or starts one.
fn plan(batch: &[Job]) -> Vec<Step> {
    let mut plan: Vec<Step> = Vec::new();
    for (index, job) in batch.iter().enumerate() {
        let batched = match &job.statement {
            Statement::Batched(batched) => Some(batched),
            Statement::One(_) => None,
        };
        let joins = |step: &Step| match (batched, &step.many) {
            (Some(batched), Some(many)) => {
                let key = &job.params[..batched.key.min(job.params.len())];
                Arc::ptr_eq(batched, many)
                    && !(step.jobs.iter()).any(|&other| batch[other].params.starts_with(key))
            }
            _ => false,
        };
        match plan.iter().position(joins) {
            Some(at) => plan[at].jobs.push(index),
            None => plan.push(Step {
                many: batched.cloned(),
                jobs: vec![index],
            }),
        }
    }
    plan
}

/// Why a batch's callers could not be given their rows.
enum Unanswered {
    /// A statement failed: it aborted the transaction, and `COMMIT` rolled it back.
    RolledBack,
    /// A shared execution returned a row without a valid position (a defect of its `many`
    /// form): the transaction committed, but whose row is whose is unknown.
    Unplaced,
}

/// Each job's rows, from its step's result: a shared execution's rows go to the job at the
/// position in their last column.
fn answers(
    batch: &[Job],
    plan: &[Step],
    results: Vec<Result<Vec<Row>, tokio_postgres::Error>>,
) -> Result<Vec<Vec<Row>>, Unanswered> {
    let results: Vec<Vec<Row>> = (results.into_iter())
        .collect::<Result<_, _>>()
        .map_err(|_| Unanswered::RolledBack)?;
    let mut answers: Vec<Vec<Row>> = batch.iter().map(|_| Vec::new()).collect();
    for (step, rows) in plan.iter().zip(results) {
        if !step.is_shared() {
            answers[step.jobs[0]] = rows;
            continue;
        }
        for row in rows {
            let job = position(&row).and_then(|at| step.jobs.get(at));
            answers[*job.ok_or(Unanswered::Unplaced)?].push(row);
        }
    }
    Ok(answers)
}

/// The 0-based position a shared execution's row gives in its last column.
fn position(row: &Row) -> Option<usize> {
    let position: i64 = row.try_get(row.len().checked_sub(1)?).ok()?;
    usize::try_from(position).ok()?.checked_sub(1)
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
