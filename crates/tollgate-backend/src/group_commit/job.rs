//! What a caller hands the writers.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::Row;

use super::batched::Batched;
use super::encoded::Encoded;
use crate::Error;
use crate::postgres::Query;

/// Called with the size of every transaction written.
pub(super) type Observer = Arc<dyn Fn(usize) + Send + Sync>;

/// The queue the writers share: one at a time takes what is waiting.
pub(super) type Queue = Arc<Mutex<mpsc::UnboundedReceiver<Job>>>;

/// One caller's statement, its parameters already encoded, and where its answer goes.
pub(super) struct Job {
    pub(super) statement: Statement,
    pub(super) params: Vec<Encoded>,
    pub(super) reply: oneshot::Sender<Result<Vec<Row>, Error>>,
}

/// What a caller submitted: a statement of its own, or one a batch may run for many.
pub(super) enum Statement {
    One(Arc<Query>),
    Batched(Arc<Batched>),
}

impl Statement {
    /// The statement for this caller alone.
    pub(super) fn one(&self) -> &Query {
        match self {
            Statement::One(query) => query,
            Statement::Batched(batched) => batched.one(),
        }
    }
}
