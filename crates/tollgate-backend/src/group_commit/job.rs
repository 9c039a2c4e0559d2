//! What a caller hands the writers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::Row;

use super::batched::Batched;
use super::encoded::Encoded;
use crate::Error;
use crate::postgres::Query;

/// Called with every transaction written.
pub(super) type Observer = Arc<dyn Fn(Written) + Send + Sync>;

/// A transaction written, as [`GroupCommit::observed`](super::GroupCommit::observed)'s observer
/// hears of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Written {
    /// The statements in it (1 for a statement sent alone).
    pub statements: usize,
    /// Whether its caller sent it, at once and alone, while few statements were in flight
    /// ([`GroupCommitConfig::alone_up_to`](super::GroupCommitConfig::alone_up_to)), rather
    /// than a writer.
    pub by_caller: bool,
}

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

/// How busy the writes are: statements in flight (queued, in a batch or sent alone) and
/// writers writing a batch.
#[derive(Debug, Default)]
pub(super) struct Load {
    in_flight: AtomicUsize,
    writing: AtomicUsize,
}

impl Load {
    /// Counts a statement in flight until the returned guard is dropped (answered, or its
    /// caller stopped waiting).
    pub(super) fn enter(&self) -> InFlight<'_> {
        let count = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        InFlight { load: self, count }
    }

    /// Whether a writer is writing a batch.
    pub(super) fn writing(&self) -> bool {
        self.writing.load(Ordering::Acquire) > 0
    }

    /// Counts a writer as writing until the returned guard is dropped.
    pub(super) fn write(&self) -> Writing<'_> {
        self.writing.fetch_add(1, Ordering::AcqRel);
        Writing(self)
    }
}

/// A statement in flight.
pub(super) struct InFlight<'a> {
    load: &'a Load,
    count: usize,
}

impl InFlight<'_> {
    /// Statements in flight when this one entered, itself included.
    pub(super) fn count(&self) -> usize {
        self.count
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.load.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A writer writing a batch.
pub(super) struct Writing<'a>(&'a Load);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.writing.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_counts_what_is_in_flight_until_it_is_dropped() {
        let load = Load::default();
        let first = load.enter();
        let second = load.enter();
        assert_eq!((first.count(), second.count()), (1, 2));
        drop(first);
        assert_eq!(load.enter().count(), 2, "the first left, the second stays");
        assert!(!load.writing());
        let writing = load.write();
        assert!(load.writing());
        drop(writing);
        assert!(!load.writing());
    }
}
