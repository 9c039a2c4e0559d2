//! What the driver's store calls tell the outside world, with the `tracing` and `metrics`
//! features: a span per call with its outcome, and the store's latency. Without the features
//! every function here is an empty wrapper the compiler removes.
//!
//! | name | kind | fields / labels |
//! |---|---|---|
//! | `tollgate.idempotency.claim`, `.complete`, `.release` | span (DEBUG) | `tollgate.idempotency.store` (`memory`, `redis`, `postgresql`, or the store's own name), `db.system.name` (`redis`, `postgresql`), then `tollgate.idempotency.outcome` and `error.type` |
//! | `tollgate_idempotency_store_duration_seconds` | histogram | `store`, `operation` |
//! | `tollgate_idempotency_outcomes_total` | counter | `operation`, `outcome` |
//!
//! Outcomes: a claim is `acquired`, `resumed` (an ambiguous earlier attempt's record, taken
//! over), `in_progress`, `completed` (a replay follows) or `mismatch`; a completion or a release
//! is `ok`; any call that failed is `error`, with `error.type` `fenced` or `store`.

use std::future::Future;

use crate::error::Error;
use crate::store::Claim;

/// Which store call is observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    Claim,
    Complete,
    Release,
}

impl Operation {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    fn as_str(self) -> &'static str {
        match self {
            Operation::Claim => "claim",
            Operation::Complete => "complete",
            Operation::Release => "release",
        }
    }
}

/// A call's result in one word.
pub(crate) trait Outcome {
    #[cfg_attr(not(any(feature = "tracing", feature = "metrics")), allow(dead_code))]
    fn outcome(&self) -> &'static str;
}

impl Outcome for Claim {
    fn outcome(&self) -> &'static str {
        match self {
            Claim::Acquired(lease) if lease.resumed => "resumed",
            Claim::Acquired(_) => "acquired",
            Claim::InProgress { .. } => "in_progress",
            Claim::Completed(_) => "completed",
            Claim::Mismatch => "mismatch",
        }
    }
}

impl Outcome for () {
    fn outcome(&self) -> &'static str {
        "ok"
    }
}

/// A store call's span: its name must be a literal, so one macro for the three.
#[cfg(feature = "tracing")]
macro_rules! store_span {
    ($name:literal, $store:expr) => {
        tracing::debug_span!(
            $name,
            tollgate.idempotency.store = $store,
            db.system.name = tracing::field::Empty,
            tollgate.idempotency.outcome = tracing::field::Empty,
            error.type = tracing::field::Empty,
        )
    };
}

/// Runs a store call under observation.
pub(crate) async fn observe<T: Outcome, F>(
    store: &'static str,
    operation: Operation,
    call: F,
) -> Result<T, Error>
where
    F: Future<Output = Result<T, Error>>,
{
    #[cfg(feature = "metrics")]
    let started = std::time::Instant::now();
    #[cfg(feature = "tracing")]
    let result = {
        use tracing::Instrument;
        let span = match operation {
            Operation::Claim => store_span!("tollgate.idempotency.claim", store),
            Operation::Complete => store_span!("tollgate.idempotency.complete", store),
            Operation::Release => store_span!("tollgate.idempotency.release", store),
        };
        if matches!(store, "redis" | "postgresql") {
            span.record("db.system.name", store);
        }
        let result = call.instrument(span.clone()).await;
        span.record("tollgate.idempotency.outcome", outcome(&result));
        if let Err(error) = &result {
            span.record("error.type", error_type(error));
        }
        result
    };
    #[cfg(not(feature = "tracing"))]
    let result = call.await;
    #[cfg(feature = "metrics")]
    {
        let labels = [("store", store), ("operation", operation.as_str())];
        metrics::histogram!("tollgate_idempotency_store_duration_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!(
            "tollgate_idempotency_outcomes_total",
            "operation" => operation.as_str(),
            "outcome" => outcome(&result),
        )
        .increment(1);
    }
    #[cfg(not(any(feature = "tracing", feature = "metrics")))]
    let _ = (store, operation);
    result
}

#[cfg(any(feature = "tracing", feature = "metrics"))]
fn outcome<T: Outcome>(result: &Result<T, Error>) -> &'static str {
    match result {
        Ok(value) => value.outcome(),
        Err(_) => "error",
    }
}

#[cfg(feature = "tracing")]
fn error_type(error: &Error) -> &'static str {
    match error {
        Error::Fenced => "fenced",
        Error::Store { .. } => "store",
        Error::Mismatch => "mismatch",
        Error::Conflict { .. } => "conflict",
        Error::Key(_) => "key",
        Error::InvalidBody(_) => "invalid_body",
    }
}
