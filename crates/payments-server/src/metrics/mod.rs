//! Prometheus metrics: the payment counters, request latency per route and status, limiter
//! degradation and the processor's circuit breaker.

use std::sync::atomic::{AtomicU64, Ordering};

mod backends;
mod latency;
mod success_window;

pub(crate) use backends::{BackendMetrics, BackendSnapshot};
pub(crate) use latency::{BackendLatency, Timer};

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use success_window::SuccessWindow;

/// Every metric the server exports.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// Payment requests answered, by outcome.
    pub(crate) payment_requests: IntCounterVec,
    payment_success_rate: Gauge,
    success_window: SuccessWindow,
    /// Requests refused by a rate limit, by policy.
    pub(crate) rate_limit_exceeded: IntCounterVec,
    /// Reloads of the configuration file (SIGHUP), by result (`success`, `failure`).
    pub(crate) config_reloads: IntCounterVec,
    /// When the last reload succeeded, in Unix seconds (the start-up's load counts as one).
    pub(crate) config_last_reload_success: IntGauge,
    /// Stored responses replayed.
    pub(crate) idempotent_replays: IntCounter,
    /// `409`: a duplicate arrived while the first was in flight and did not finish in time.
    pub(crate) concurrent_conflicts: IntCounter,
    /// Request duration by route template, method and status.
    pub(crate) request_duration: HistogramVec,
    /// Rate-limit decisions made without Redis, by mode.
    limiter_degraded: IntCounterVec,
    limiter_seen: [AtomicU64; 3],
    /// 0 closed, 1 open, 2 half-open.
    pub(crate) breaker_state: IntGauge,
    /// Backend probes run for `/health` and `/ready` (each answers every caller for a while).
    pub(crate) health_probes: IntCounter,
    /// Each probed backend: 1 up, 0 down, as of the last probe.
    pub(crate) backend_up: IntGaugeVec,
    /// Refusals counted into an audit entry rather than written one by one.
    pub(crate) audit_refusals_folded: IntCounter,
    /// The process, the pools, Redis and the audit writer.
    pub(crate) backends: BackendMetrics,
}

/// Limiter decisions made while Redis was unreachable, as counted by the limiter.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DegradedCounts {
    pub(crate) fail_open: u64,
    pub(crate) fail_closed: u64,
    pub(crate) local_fallback: u64,
}

pub(super) fn must<T>(result: prometheus::Result<T>) -> T {
    // Registration only fails for invalid or duplicate names, which are constants here.
    result.expect("metric definitions are valid and registered once")
}

/// `metric`, made and registered in one step.
pub(super) fn registered<C>(registry: &Registry, metric: prometheus::Result<C>) -> C
where
    C: prometheus::core::Collector + Clone + 'static,
{
    let metric = must(metric);
    must(registry.register(Box::new(metric.clone())));
    metric
}

/// `http_request_duration_seconds`, registered: buckets from 1 ms to 10 s.
fn request_durations(registry: &Registry) -> HistogramVec {
    let buckets = vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let options = HistogramOpts::new(
        "http_request_duration_seconds",
        "Request duration, by route template, method and status",
    )
    .buckets(buckets);
    registered(
        registry,
        HistogramVec::new(options, &["route", "method", "status"]),
    )
}

/// A registered counter.
pub(super) fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    registered(registry, IntCounter::new(name, help))
}

/// A registered counter per `labels`.
pub(super) fn counters(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntCounterVec {
    registered(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

/// A registered gauge.
pub(super) fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    registered(registry, IntGauge::new(name, help))
}

/// A registered gauge per `labels`.
pub(super) fn gauges(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

impl Metrics {
    pub(crate) fn new(latency: &BackendLatency) -> Self {
        let registry = Registry::new();
        let r = &registry;
        let request_duration = request_durations(r);
        for collector in latency.collectors() {
            must(registry.register(collector));
        }
        let metrics = Metrics {
            payment_requests: counters(
                r,
                "payment_requests_total",
                "Payment requests answered, by outcome (succeeded, declined, failed, replayed, conflicted, rejected, rate_limited)",
                &["outcome"],
            ),
            payment_success_rate: registered(
                r,
                Gauge::new(
                    "payment_success_rate",
                    "Percentage (0-100) of the payments processed in the last 5 minutes that succeeded (100 when none was)",
                ),
            ),
            success_window: SuccessWindow::new(),
            rate_limit_exceeded: counters(
                r,
                "rate_limit_exceeded_total",
                "Requests refused by a rate limit, by the policy that denied",
                &["policy"],
            ),
            config_reloads: counters(
                r,
                "config_reloads_total",
                "Reloads of TOLLGATE_CONFIG at SIGHUP, by result (success, failure)",
                &["result"],
            ),
            config_last_reload_success: gauge(
                r,
                "config_last_reload_success_timestamp_seconds",
                "When the configuration was last loaded successfully (start-up or SIGHUP), in Unix seconds",
            ),
            idempotent_replays: counter(
                r,
                "idempotent_replays_total",
                "Stored responses replayed for a repeated Idempotency-Key",
            ),
            concurrent_conflicts: counter(
                r,
                "concurrent_conflicts_total",
                "Requests answered 409 because the same key was still in progress",
            ),
            request_duration,
            limiter_degraded: counters(
                r,
                "rate_limiter_degraded_decisions_total",
                "Rate-limit decisions made while Redis was unreachable, by failure mode",
                &["mode"],
            ),
            limiter_seen: Default::default(),
            breaker_state: gauge(
                r,
                "payment_processor_circuit_state",
                "The processor's circuit breaker: 0 closed, 1 open, 2 half-open",
            ),
            health_probes: counter(
                r,
                "health_probes_total",
                "Backend probes run for /health and /ready (one answers every caller for health.cache)",
            ),
            backend_up: gauges(
                r,
                "backend_up",
                "Whether a backend answered its last /health or /ready probe (1) or not (0)",
                &["backend"],
            ),
            audit_refusals_folded: counter(
                r,
                "audit_refusals_folded_total",
                "Refusals counted into a per-window audit entry instead of written one by one",
            ),
            backends: BackendMetrics::new(r),
            registry,
        };
        metrics.zero_outcomes();
        metrics.config_loaded();
        metrics
    }

    /// Every series whose labels are known before any request exists from the first scrape, at
    /// zero, so dashboards show 0 rather than "no data" and `rate()` alerts see the first
    /// increase: the reloads' results, the payments' and the idempotency layer's outcomes, and
    /// each route's server errors (the error-rate alert's numerator; the statuses a route
    /// answers normally appear with its first request).
    fn zero_outcomes(&self) {
        for (method, route) in crate::paths::ROUTES {
            for status in ["500", "503"] {
                (self.request_duration).with_label_values(&[route, method.as_str(), status]);
            }
        }
        // A payment whose processor call failed is answered 502.
        let payments = [crate::paths::PAYMENTS, "POST", "502"];
        self.request_duration.with_label_values(&payments);
        for result in ["success", "failure"] {
            self.config_reloads.with_label_values(&[result]);
        }
        for outcome in PaymentOutcome::ALL {
            self.payment_requests.with_label_values(&[outcome.label()]);
        }
        for outcome in IDEMPOTENCY_OUTCOMES {
            (self.backends.idempotency_requests).with_label_values(&[outcome]);
        }
    }

    /// Makes the series of every policy of `policies` (every tier's too) exist at zero:
    /// `rate_limit_exceeded_total` and `rate_limit_decisions_total` by result. Called at
    /// start-up and at each reload (a removed policy's series stay, as counters do).
    pub(crate) fn zero_policies(&self, policies: &tollgate_ratelimit::PolicySet) {
        let tiers = policies.tiers().map(Some).chain([None]);
        for policy in tiers.flat_map(|tier| policies.policies_for(tier)) {
            let name = policy.name();
            let results: &[&str] = match policy.mode() {
                tollgate_ratelimit::Mode::Shadow => &["would-deny"],
                _ => &["allowed", "denied"],
            };
            if policy.mode() != tollgate_ratelimit::Mode::Shadow {
                self.rate_limit_exceeded.with_label_values(&[name]);
            }
            for result in results {
                (self.backends.rate_limit_decisions).with_label_values(&[name, result]);
            }
        }
    }

    /// The configuration was loaded (at start-up, or by a reload).
    pub(crate) fn config_loaded(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.config_last_reload_success.set(now);
    }

    /// A payment reached the processor and ended (approved or declined).
    pub(crate) fn processed(&self, succeeded: bool) {
        let rate = self.success_window.record(succeeded);
        self.payment_success_rate.set(rate);
    }

    /// Brings the degradation counters up to the limiter's own totals.
    pub(crate) fn observe_limiter(&self, counts: DegradedCounts) {
        let totals = [
            ("fail_open", counts.fail_open),
            ("fail_closed", counts.fail_closed),
            ("local_fallback", counts.local_fallback),
        ];
        for ((mode, total), seen) in totals.iter().zip(&self.limiter_seen) {
            let before = seen.swap(*total, Ordering::Relaxed);
            if *total > before {
                self.limiter_degraded
                    .with_label_values(&[*mode])
                    .inc_by(total - before);
            } else {
                // Make the series exist from the first scrape.
                self.limiter_degraded.with_label_values(&[*mode]).inc_by(0);
            }
        }
    }

    /// Brings the backends' metrics to what `snapshot` read.
    pub(crate) fn observe_backends(&self, snapshot: &BackendSnapshot) {
        self.backends.observe(snapshot);
    }

    /// The text exposition.
    pub(crate) fn render(&self) -> String {
        // The window moves when no payment comes: bring the rate up to now.
        self.payment_success_rate.set(self.success_window.rate());
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "metrics encoding failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// How a payment request ended: the `outcome` label of `payment_requests_total`, named once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PaymentOutcome {
    /// Charged.
    Succeeded,
    /// Declined by the processor.
    Declined,
    /// The processor's answer was lost: pending until a retry reconciles it.
    Failed,
    /// Refused for its content (validation, media type, a key reused for another request).
    Rejected,
    /// Refused by a rate limit.
    RateLimited,
    /// Answered from a stored result.
    Replayed,
    /// The key is in use by another request, or was taken over.
    Conflicted,
    /// A backend or the processor was unavailable, or the deadline passed.
    Unavailable,
}

/// The `outcome` labels of `idempotency_requests_total`: what the idempotency layer did.
pub(crate) const IDEMPOTENCY_OUTCOMES: [&str; 10] = [
    "executed",
    "replayed",
    "conflict",
    "mismatch",
    "fenced",
    "invalid_key",
    "invalid_body",
    "body_too_large",
    "store_failed",
    "other",
];

impl PaymentOutcome {
    /// Every outcome.
    pub(crate) const ALL: [PaymentOutcome; 8] = [
        PaymentOutcome::Succeeded,
        PaymentOutcome::Declined,
        PaymentOutcome::Failed,
        PaymentOutcome::Rejected,
        PaymentOutcome::RateLimited,
        PaymentOutcome::Replayed,
        PaymentOutcome::Conflicted,
        PaymentOutcome::Unavailable,
    ];

    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            PaymentOutcome::Succeeded => "succeeded",
            PaymentOutcome::Declined => "declined",
            PaymentOutcome::Failed => "failed",
            PaymentOutcome::Rejected => "rejected",
            PaymentOutcome::RateLimited => "rate_limited",
            PaymentOutcome::Replayed => "replayed",
            PaymentOutcome::Conflicted => "conflicted",
            PaymentOutcome::Unavailable => "unavailable",
        }
    }
}
