//! `backend_call_duration_seconds{backend, call}`: how long each call to Redis and PostgreSQL
//! took, measured around the call as the request sees it (pool wait included); and, with
//! `[telemetry] backend_spans`, a client span around each call.

use std::time::Instant;

use prometheus::{Histogram, HistogramOpts, HistogramVec};
use tollgate_backend::group_commit::Written;
use tracing::Instrument;

use super::must;

/// The histogram, shared by every timed backend; labels are fixed names, so bounded.
#[derive(Clone, Debug)]
pub(crate) struct BackendLatency {
    histogram: HistogramVec,
    /// `database_group_commit_size{sent_by}`: the payment writes of each transaction, by who
    /// sent it: `request` (at once, alone, by its own request) or `writer` (a batch).
    batch_sizes: [Histogram; 2],
    /// Both of them, for the registry.
    collector: HistogramVec,
    /// Whether each call also gets a span.
    spans: bool,
}

impl Default for BackendLatency {
    /// Without spans.
    fn default() -> Self {
        BackendLatency::new(false)
    }
}

impl BackendLatency {
    /// The histogram; `spans` gives each call a span of its own too.
    pub(crate) fn new(spans: bool) -> Self {
        let histogram = must(HistogramVec::new(
            HistogramOpts::new(
                "backend_call_duration_seconds",
                "Duration of each call to Redis or PostgreSQL, by backend and call, pool wait included",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["backend", "call"],
        ));
        let batch_sizes = must(HistogramVec::new(
            HistogramOpts::new(
                "database_group_commit_size",
                "Payment writes per PostgreSQL transaction, by who sent it: its own request \
                 (at once, alone) or the group-commit writer",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
            &["sent_by"],
        ));
        BackendLatency {
            histogram,
            // Both series exist from the start, at zero.
            batch_sizes: ["request", "writer"].map(|by| batch_sizes.with_label_values(&[by])),
            collector: batch_sizes,
            spans,
        }
    }

    /// Records a group-commit transaction.
    pub(crate) fn batch(&self, written: Written) {
        let [by_request, by_writer] = &self.batch_sizes;
        let series = if written.by_caller {
            by_request
        } else {
            by_writer
        };
        series.observe(written.statements as f64);
    }

    /// The series of one call, resolved once (a label lookup per call would cost a hash).
    pub(crate) fn call(&self, backend: &'static str, call: &'static str) -> Timer {
        Timer {
            histogram: self.histogram.with_label_values(&[backend, call]),
            span: self.spans.then_some(CallSpan {
                // OpenTelemetry's names for the database systems.
                system: if backend == "postgres" {
                    "postgresql"
                } else {
                    backend
                },
                operation: call,
            }),
        }
    }

    /// For registering in the server's registry.
    pub(crate) fn collectors(&self) -> [Box<dyn prometheus::core::Collector>; 2] {
        [
            Box::new(self.histogram.clone()),
            Box::new(self.collector.clone()),
        ]
    }
}

/// One call's series, and its span's names when calls have spans.
#[derive(Clone, Debug)]
pub(crate) struct Timer {
    histogram: Histogram,
    span: Option<CallSpan>,
}

#[derive(Clone, Copy, Debug)]
struct CallSpan {
    system: &'static str,
    operation: &'static str,
}

impl Timer {
    /// Awaits `call` and records how long it took, whatever it returned; in a client span
    /// (`db.system.name`, `db.operation.name`) when calls have spans.
    pub(crate) async fn time<T>(&self, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let result = match self.span {
            Some(names) => call.instrument(names.span()).await,
            None => call.await,
        };
        self.histogram.observe(started.elapsed().as_secs_f64());
        result
    }
}

impl CallSpan {
    fn span(self) -> tracing::Span {
        let span = tracing::info_span!(
            "backend call",
            db.system.name = self.system,
            db.operation.name = self.operation,
            otel.name = tracing::field::Empty,
            otel.kind = tracing::field::Empty,
        );
        #[cfg(feature = "otlp")]
        if crate::telemetry::exporting() {
            span.record("otel.name", format!("{} {}", self.operation, self.system));
            span.record("otel.kind", "client");
        }
        span
    }
}
