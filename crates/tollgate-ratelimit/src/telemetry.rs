//! What a decision tells the outside world, with the `tracing` and `metrics` features: a span per
//! decision, a DEBUG event per denial, counters per policy and result, and the backend's
//! latency. Without the features every function here is an empty wrapper the compiler removes.
//!
//! | name | kind | fields / labels |
//! |---|---|---|
//! | `tollgate.ratelimit.check` | span (DEBUG) | `tollgate.ratelimit.backend`, `tollgate.ratelimit.operation` (`check`, `peek`), `tollgate.ratelimit.policies`, `tollgate.ratelimit.cost`, `db.system.name` (`redis`), then `tollgate.ratelimit.result` (`allowed`, `denied`), `tollgate.ratelimit.policy` (the one that denied), `tollgate.ratelimit.retry_after_ms`, `tollgate.ratelimit.degraded`, `error.type` |
//! | `rate limit denied` | event (DEBUG) | `tollgate.ratelimit.policy`, `tollgate.ratelimit.key` (`policy:subject`), `tollgate.ratelimit.retry_after_ms` |
//! | `tollgate_ratelimit_decisions_total` | counter | `policy`, `result` (`allowed`, `denied`): one per policy of each checked decision |
//! | `tollgate_ratelimit_backend_duration_seconds` | histogram | `backend`, `operation` |
//! | `tollgate_ratelimit_backend_errors_total` | counter | `backend`, `error_type` |

use std::future::Future;

use crate::decision::Decision;
use crate::error::Error;
use crate::policy::PolicyKey;

/// Which call of a backend is observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    Check,
    Peek,
}

impl Operation {
    #[cfg_attr(not(any(feature = "tracing", feature = "metrics")), allow(dead_code))]
    fn as_str(self) -> &'static str {
        match self {
            Operation::Check => "check",
            Operation::Peek => "peek",
        }
    }
}

/// Runs a backend's decision under observation.
pub(crate) async fn observe<'k, F>(
    backend: &'static str,
    operation: Operation,
    keys: &'k [PolicyKey],
    cost: u64,
    decide: F,
) -> Result<Decision<'k>, Error>
where
    F: Future<Output = Result<Decision<'k>, Error>>,
{
    #[cfg(feature = "metrics")]
    let started = std::time::Instant::now();
    #[cfg(feature = "tracing")]
    let (span, result) = {
        use tracing::Instrument;
        let span = tracing::debug_span!(
            "tollgate.ratelimit.check",
            tollgate.ratelimit.backend = backend,
            tollgate.ratelimit.operation = operation.as_str(),
            tollgate.ratelimit.policies = %policy_names(keys),
            tollgate.ratelimit.cost = cost,
            db.system.name = tracing::field::Empty,
            tollgate.ratelimit.result = tracing::field::Empty,
            tollgate.ratelimit.policy = tracing::field::Empty,
            tollgate.ratelimit.retry_after_ms = tracing::field::Empty,
            tollgate.ratelimit.degraded = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        if backend != "memory" {
            span.record("db.system.name", "redis");
        }
        let result = decide.instrument(span.clone()).await;
        (span, result)
    };
    #[cfg(not(feature = "tracing"))]
    let result = decide.await;
    #[cfg(feature = "tracing")]
    span.in_scope(|| trace_result(&span, &result));
    #[cfg(feature = "metrics")]
    count(backend, operation, started.elapsed(), &result);
    #[cfg(not(feature = "tracing"))]
    let _ = (keys, cost);
    #[cfg(not(any(feature = "tracing", feature = "metrics")))]
    let _ = (backend, operation);
    result
}

#[cfg(feature = "tracing")]
fn policy_names(keys: &[PolicyKey]) -> String {
    let names: Vec<&str> = keys.iter().map(|key| key.policy().name()).collect();
    names.join(",")
}

/// The error's kind, for `error.type` and the error counter: a short fixed word.
#[cfg(any(feature = "tracing", feature = "metrics"))]
fn error_type(error: &Error) -> &'static str {
    match error {
        Error::InvalidPolicy { .. } => "invalid_policy",
        Error::InvalidConfig(_) => "invalid_config",
        Error::InsufficientCapacity { .. } => "insufficient_capacity",
        Error::DuplicateKey(_) => "duplicate_key",
        Error::Backend { .. } => "backend",
    }
}

#[cfg(feature = "tracing")]
fn trace_result(span: &tracing::Span, result: &Result<Decision<'_>, Error>) {
    let decision = match result {
        Ok(decision) => decision,
        Err(error) => {
            span.record("error.type", error_type(error));
            return;
        }
    };
    let allowed = decision.is_allowed();
    span.record(
        "tollgate.ratelimit.result",
        if allowed { "allowed" } else { "denied" },
    );
    span.record("tollgate.ratelimit.degraded", decision.is_degraded());
    if let Some(binding) = decision.binding().filter(|_| !allowed) {
        let retry_after_ms = binding.retry_after().map_or(0, |after| after.as_millis());
        let retry_after_ms = u64::try_from(retry_after_ms).unwrap_or(u64::MAX);
        span.record("tollgate.ratelimit.policy", binding.policy().name());
        span.record("tollgate.ratelimit.retry_after_ms", retry_after_ms);
        tracing::debug!(
            tollgate.ratelimit.policy = binding.policy().name(),
            tollgate.ratelimit.key = binding.key().storage_key(),
            tollgate.ratelimit.retry_after_ms = retry_after_ms,
            "rate limit denied"
        );
    }
}

#[cfg(feature = "metrics")]
fn count(
    backend: &'static str,
    operation: Operation,
    took: std::time::Duration,
    result: &Result<Decision<'_>, Error>,
) {
    metrics::histogram!(
        "tollgate_ratelimit_backend_duration_seconds",
        "backend" => backend,
        "operation" => operation.as_str(),
    )
    .record(took.as_secs_f64());
    match result {
        Ok(decision) if operation == Operation::Check => {
            for policy in decision.policies() {
                let result = if policy.is_allowed() {
                    "allowed"
                } else {
                    "denied"
                };
                metrics::counter!(
                    "tollgate_ratelimit_decisions_total",
                    "policy" => metrics::SharedString::from(std::sync::Arc::clone(policy.policy().name_arc())),
                    "result" => result,
                )
                .increment(1);
            }
        }
        Ok(_) => {}
        Err(error) => metrics::counter!(
            "tollgate_ratelimit_backend_errors_total",
            "backend" => backend,
            "error_type" => error_type(error),
        )
        .increment(1),
    }
}
