//! What retries and breakers tell the outside world, with the `tracing` and `metrics` features.
//! Without them every function here is empty and the compiler removes it.
//!
//! | name | kind | fields / labels |
//! |---|---|---|
//! | `retrying` | event (DEBUG) | `tollgate.retry.attempt` (the attempt that failed), `tollgate.retry.delay_ms`, `error.type` (`error`, `timeout`) |
//! | `retry budget exhausted` | event (DEBUG) | `tollgate.retry.attempt`, `error.type` |
//! | `circuit breaker opened` / `half-open` / `closed` | event (WARN when it opens, INFO otherwise) | `tollgate.breaker.name`, `tollgate.breaker.from`, `tollgate.breaker.to` |
//! | `tollgate_retry_retries_total` | counter | `cause` (`error`, `timeout`) |
//! | `tollgate_retry_budget_exhausted_total` | counter | — |
//! | `tollgate_retry_breaker_transitions_total` | counter | `breaker`, `from`, `to` |
//! | `tollgate_retry_breaker_state` | gauge | `breaker`; 0 closed, 1 half-open, 2 open (set from the breaker's creation) |
//!
//! The error itself is the caller's type, which this crate cannot print: hear it with
//! [`Retrier::run_observed`](crate::retry::Retrier::run_observed).

use std::time::Duration;

use crate::budget::Cause;

#[cfg_attr(not(any(feature = "tracing", feature = "metrics")), allow(dead_code))]
fn cause_name(cause: Cause) -> &'static str {
    match cause {
        Cause::Error => "error",
        Cause::Timeout => "timeout",
    }
}

/// Attempt `attempt` failed for `cause`; the retry waits `delay`.
pub(crate) fn retrying(attempt: u32, delay: Duration, cause: Cause) {
    #[cfg(feature = "tracing")]
    tracing::debug!(
        tollgate.retry.attempt = attempt,
        tollgate.retry.delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        error.type = cause_name(cause),
        "retrying"
    );
    #[cfg(feature = "metrics")]
    metrics::counter!("tollgate_retry_retries_total", "cause" => cause_name(cause)).increment(1);
    #[cfg(not(feature = "tracing"))]
    let _ = (attempt, delay);
    #[cfg(not(any(feature = "tracing", feature = "metrics")))]
    let _ = cause;
}

/// The budget refused a retry: the last result is returned.
pub(crate) fn budget_exhausted(attempt: u32, cause: Cause) {
    #[cfg(feature = "tracing")]
    tracing::debug!(
        tollgate.retry.attempt = attempt,
        error.type = cause_name(cause),
        "retry budget exhausted"
    );
    #[cfg(feature = "metrics")]
    metrics::counter!("tollgate_retry_budget_exhausted_total").increment(1);
    #[cfg(not(feature = "tracing"))]
    let _ = (attempt, cause);
}

/// A breaker was made: its state series exists from now on.
pub(crate) fn breaker_created(name: &str) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("tollgate_retry_breaker_state", "breaker" => name.to_owned()).set(0.0);
    #[cfg(not(feature = "metrics"))]
    let _ = name;
}

/// A breaker changed state, between `closed`, `open` and `half_open`.
pub(crate) fn breaker_transition(name: &str, from: &'static str, to: &'static str) {
    #[cfg(feature = "tracing")]
    match to {
        "open" => tracing::warn!(
            tollgate.breaker.name = name,
            tollgate.breaker.from = from,
            tollgate.breaker.to = to,
            "circuit breaker opened"
        ),
        "half_open" => tracing::info!(
            tollgate.breaker.name = name,
            tollgate.breaker.from = from,
            tollgate.breaker.to = to,
            "circuit breaker half-open"
        ),
        _ => tracing::info!(
            tollgate.breaker.name = name,
            tollgate.breaker.from = from,
            tollgate.breaker.to = to,
            "circuit breaker closed"
        ),
    }
    #[cfg(feature = "metrics")]
    {
        let value = match to {
            "open" => 2.0,
            "half_open" => 1.0,
            _ => 0.0,
        };
        metrics::gauge!("tollgate_retry_breaker_state", "breaker" => name.to_owned()).set(value);
        metrics::counter!(
            "tollgate_retry_breaker_transitions_total",
            "breaker" => name.to_owned(),
            "from" => from,
            "to" => to,
        )
        .increment(1);
    }
    #[cfg(not(any(feature = "tracing", feature = "metrics")))]
    let _ = (name, from, to);
}
