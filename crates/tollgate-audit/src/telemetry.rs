//! What the sinks tell the outside world, with the `tracing` and `metrics` features. Without
//! them every function here is an empty wrapper the compiler removes.
//!
//! | name | kind | fields / labels |
//! |---|---|---|
//! | `tollgate.audit.write` | span (DEBUG) | `tollgate.audit.sink` (`postgresql`, `json_lines`), `tollgate.audit.events`, `db.system.name` (`postgresql`), `error.type` |
//! | `audit events dropped` | event (WARN) | `tollgate.audit.sink` (`postgresql`: unwritten at shutdown), `tollgate.audit.events` |
//! | `tollgate_audit_events_written_total` | counter | `sink` |
//! | `tollgate_audit_write_duration_seconds` | histogram | `sink` |
//! | `tollgate_audit_write_failures_total` | counter | `sink` (a failed PostgreSQL batch is retried) |
//! | `tollgate_audit_dropped_total` | counter | `sink` (`memory`: evicted by its bounds; `postgresql`: unwritten at shutdown) |
//! | `tollgate_audit_queue_depth` | gauge | — (the PostgreSQL writer's queue, after each batch) |

#![cfg_attr(not(any(feature = "tracing", feature = "metrics")), allow(dead_code))]

use std::future::Future;

/// Runs one write of `events` events to `sink` under observation.
pub(crate) async fn write<T, E, F>(sink: &'static str, events: usize, call: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    #[cfg(feature = "metrics")]
    let started = std::time::Instant::now();
    #[cfg(feature = "tracing")]
    let result = {
        use tracing::Instrument;
        let span = tracing::debug_span!(
            "tollgate.audit.write",
            tollgate.audit.sink = sink,
            tollgate.audit.events = events,
            db.system.name = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        if sink == "postgresql" {
            span.record("db.system.name", sink);
        }
        let result = call.instrument(span.clone()).await;
        if result.is_err() {
            span.record("error.type", "write");
        }
        result
    };
    #[cfg(not(feature = "tracing"))]
    let result = call.await;
    #[cfg(feature = "metrics")]
    {
        metrics::histogram!("tollgate_audit_write_duration_seconds", "sink" => sink)
            .record(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => metrics::counter!("tollgate_audit_events_written_total", "sink" => sink)
                .increment(events as u64),
            Err(_) => metrics::counter!("tollgate_audit_write_failures_total", "sink" => sink)
                .increment(1),
        }
    }
    #[cfg(not(any(feature = "tracing", feature = "metrics")))]
    let _ = (sink, events);
    result
}

/// `events` accepted events were dropped by `sink`. Only the PostgreSQL writer's losses are
/// logged: the memory log drops its oldest events by design, on every record once full.
pub(crate) fn dropped(sink: &'static str, events: u64) {
    #[cfg(feature = "tracing")]
    if sink == "postgresql" {
        tracing::warn!(
            tollgate.audit.sink = sink,
            tollgate.audit.events = events,
            "audit events dropped"
        );
    }
    #[cfg(feature = "metrics")]
    metrics::counter!("tollgate_audit_dropped_total", "sink" => sink).increment(events);
    #[cfg(not(any(feature = "tracing", feature = "metrics")))]
    let _ = (sink, events);
}

/// The PostgreSQL writer's queue holds `depth` commands.
#[cfg(feature = "postgres")]
pub(crate) fn queue_depth(depth: usize) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("tollgate_audit_queue_depth").set(depth as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = depth;
}
