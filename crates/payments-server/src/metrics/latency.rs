//! `backend_call_duration_seconds{backend, call}`: how long each call to Redis and PostgreSQL
//! took, measured around the call as the request sees it (pool wait included).

use std::time::Instant;

use prometheus::{Histogram, HistogramOpts, HistogramVec};

use super::must;

/// The histogram, shared by every timed backend; labels are fixed names, so bounded.
#[derive(Clone, Debug)]
pub(crate) struct BackendLatency(HistogramVec);

impl Default for BackendLatency {
    fn default() -> Self {
        BackendLatency(must(HistogramVec::new(
            HistogramOpts::new(
                "backend_call_duration_seconds",
                "Duration of each call to Redis or PostgreSQL, by backend and call, pool wait included",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["backend", "call"],
        )))
    }
}

impl BackendLatency {
    /// The series of one call, resolved once (a label lookup per call would cost a hash).
    pub(crate) fn call(&self, backend: &'static str, call: &'static str) -> Timer {
        Timer(self.0.with_label_values(&[backend, call]))
    }

    /// For registering in the server's registry.
    pub(crate) fn collector(&self) -> Box<dyn prometheus::core::Collector> {
        Box::new(self.0.clone())
    }
}

/// One call's series.
#[derive(Clone, Debug)]
pub(crate) struct Timer(Histogram);

impl Timer {
    /// Records the time since `started`.
    pub(crate) fn since(&self, started: Instant) {
        self.0.observe(started.elapsed().as_secs_f64());
    }

    /// Awaits `call` and records how long it took, whatever it returned.
    pub(crate) async fn time<T>(&self, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let result = call.await;
        self.since(started);
        result
    }
}
