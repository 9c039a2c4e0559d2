//! The writers: each takes what is waiting and writes it, alone or in one transaction.

use std::fmt;
use std::sync::Arc;

use deadpool_postgres::Object;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::batched::Batched;
use super::encoded::{EncodedArray, as_params};
use super::job::{Job, Load, Observer, Queue, Statement, Written};
use crate::Error;
use crate::postgres::{On, Query, StatementMode, backend_error, is_transient};

/// One writer: takes what is waiting, at most `max_batch` statements, and writes it.
pub(super) struct Writer {
    pub(super) pool: deadpool_postgres::Pool,
    pub(super) mode: StatementMode,
    pub(super) max_batch: usize,
    pub(super) observe: Observer,
    pub(super) load: Arc<Load>,
    /// Whether to keep a connection from one batch to the next (not when the pool's every
    /// connection would then be kept by a writer).
    pub(super) keep: bool,
}

impl Writer {
    pub(super) async fn run(self, queue: Queue) {
        // The connection of the last batch, kept for the next one (when the pool has room for
        // it): a flight on the backend that ran the one before is measurably cheaper than on
        // another, whose caches are cold.
        let mut kept: Option<Object> = None;
        while let Some(mut batch) = self.take(&queue).await {
            let _writing = self.load.write();
            // A caller that stopped waiting is left out: nothing it asked for is written.
            batch.retain(|job| !job.reply.is_closed());
            if batch.is_empty() {
                continue;
            }
            let mut client = match self.connection(kept.take()).await {
                Ok(client) => client,
                Err(error) => {
                    fail_all(batch, Shared::new(error), true);
                    continue;
                }
            };
            (self.observe)(Written {
                statements: batch.len(),
                by_caller: false,
            });
            let alone = match batch.len() {
                1 => Some(batch),
                _ => self.together(&client, batch).await,
            };
            // A batch of one, or one of which nothing was written: each statement alone (on
            // another connection if this one broke).
            if let Some(batch) = alone {
                client = match self.connection(Some(client)).await {
                    Ok(client) => client,
                    Err(error) => {
                        fail_all(batch, Shared::new(error), true);
                        continue;
                    }
                };
                self.alone(&client, batch).await;
            }
            kept = self.keep.then_some(client);
        }
    }

    /// What is waiting, at most `max_batch` jobs, once there is something; `None` once every
    /// sender is gone.
    async fn take(&self, queue: &Queue) -> Option<Vec<Job>> {
        let mut waiting = queue.lock().await;
        let mut batch = vec![waiting.recv().await?];
        while batch.len() < self.max_batch {
            match waiting.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// `kept` if its connection still works, a connection from the pool otherwise (a broken
    /// one is dropped, and the pool discards it).
    async fn connection(
        &self,
        kept: Option<Object>,
    ) -> Result<Object, deadpool_postgres::PoolError> {
        match kept.filter(|client| !client.is_closed()) {
            Some(client) => Ok(client),
            None => self.pool.get().await,
        }
    }

    /// Each job as a statement of its own (autocommit), one after the other; a caller that
    /// stopped waiting meanwhile (its batch failed) is left out.
    async fn alone(&self, client: &Object, mut batch: Vec<Job>) {
        batch.retain(|job| !job.reply.is_closed());
        for job in batch {
            let params = as_params(&job.params);
            let rows = (job.statement.one())
                .rows(self.mode, On::Client(client), &params)
                .await;
            let _ = job.reply.send(rows.map_err(backend_error));
        }
    }

    /// The jobs in one transaction, sent in one flight (`BEGIN`, the statements, `COMMIT`,
    /// back to back on the connection; callers of one [`Batched`] statement sharing an
    /// execution). Returns the batch when nothing of it was written (a statement of it could
    /// not be prepared, or failed), for each statement to be sent again alone.
    async fn together(&self, client: &Object, batch: Vec<Job>) -> Option<Vec<Job>> {
        let plan = plan(&batch);
        // Prepared first (cached after the first batch), so that no statement below waits
        // for anything before it is sent, and they go out in order.
        for step in &plan {
            if step.query(&batch).prepare(self.mode, client).await.is_err() {
                return Some(batch);
            }
        }
        let begin = if plan.iter().any(Step::is_shared) {
            BEGIN_KEYED
        } else {
            "BEGIN"
        };
        let on = On::Client(client);
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
            (Ok(()), Err(Unanswered::RolledBack), Ok(())) => return Some(batch),
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
        None
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
            Some(batched) if self.is_shared() => batched.many(),
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
        let arrays: Vec<EncodedArray<'_>> = (batched.one().types().iter().enumerate())
            .map(|(k, element)| EncodedArray {
                element,
                values: (self.jobs.iter())
                    .map(|&job| &batch[job].params[k])
                    .collect(),
            })
            .collect();
        let params: Vec<&(dyn ToSql + Sync)> =
            arrays.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        batched.many().rows(mode, on, &params).await
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
                let key = &job.params[..batched.key().min(job.params.len())];
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tokio::sync::oneshot;
    use tokio_postgres::types::Type;

    use super::super::encoded::encode;
    use super::*;

    /// A caller of `statement` (`None`: a statement of its own) whose one parameter, the key,
    /// is `key`.
    fn job(statement: Option<&Arc<Batched>>, key: i32) -> Job {
        let params = encode(&[Type::INT4], &[&key]).expect("an int4");
        let statement = match statement {
            Some(batched) => Statement::Batched(Arc::clone(batched)),
            None => Statement::One(Arc::new(Query::new("SELECT $1", &[Type::INT4]))),
        };
        let (reply, _) = oneshot::channel();
        Job {
            statement,
            params,
            reply,
        }
    }

    fn batched() -> Arc<Batched> {
        let one = Query::new("SELECT $1", &[Type::INT4]);
        Arc::new(Batched::new(one, "SELECT p1, n FROM unnest($1::int4[])", 1).expect("int4[]"))
    }

    proptest! {
        /// Every caller is in exactly one statement; a shared execution holds callers of one
        /// batched statement with keys all different; a caller of its own statement is alone;
        /// and callers of one statement with the same key run in the order they came.
        #[test]
        fn a_plan_shares_only_what_may_be_shared(
            callers in proptest::collection::vec((0..3usize, 0..4i32), 0..40),
        ) {
            let statements = [batched(), batched()];
            let batch: Vec<Job> = callers
                .iter()
                .map(|&(which, key)| job(statements.get(which.wrapping_sub(1)), key))
                .collect();
            let plan = plan(&batch);
            let mut step_of = vec![None; batch.len()];
            for (at, step) in plan.iter().enumerate() {
                for &job in &step.jobs {
                    prop_assert!(step_of[job].replace(at).is_none(), "caller {job} twice");
                }
                match &step.many {
                    None => prop_assert_eq!(step.jobs.len(), 1),
                    Some(many) => {
                        let mut keys = std::collections::BTreeSet::new();
                        for &job in &step.jobs {
                            let Statement::Batched(own) = &batch[job].statement else {
                                return Err(TestCaseError::fail("a lone statement shared"));
                            };
                            prop_assert!(Arc::ptr_eq(own, many));
                            prop_assert!(keys.insert(callers[job].1), "a key twice in one step");
                        }
                    }
                }
            }
            prop_assert!(step_of.iter().all(Option::is_some), "a caller left out");
            for (i, first) in callers.iter().enumerate() {
                for (j, second) in callers.iter().enumerate().skip(i + 1) {
                    if first == second && first.0 != 0 {
                        prop_assert!(step_of[i] < step_of[j], "callers {i} and {j} reordered");
                    }
                }
            }
        }
    }
}
