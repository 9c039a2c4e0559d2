//! `/health` and `/ready`: each configured backend probed with a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_ratelimit::redis::RedisLimiter;

use crate::ledger::Ledger;
use crate::metrics::DegradedCounts;

/// A probe must answer within this, or the service counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The backends a health check probes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Services {
    /// The Redis rate limiter (its pool also serves idempotency records when there is no
    /// database).
    pub(crate) redis: Option<RedisLimiter>,
    /// The PostgreSQL ledger.
    pub(crate) database: Option<Arc<dyn Ledger>>,
}

/// One backend's state.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Probe {
    Disabled,
    Up(Duration),
    Down(String),
}

impl Probe {
    fn to_json(&self) -> Value {
        match self {
            Probe::Disabled => json!({ "status": "disabled", "latency_ms": null }),
            Probe::Up(latency) => {
                json!({ "status": "up", "latency_ms": (latency.as_secs_f64() * 1e6).round() / 1e3 })
            }
            Probe::Down(error) => {
                json!({ "status": "down", "latency_ms": null, "error": error })
            }
        }
    }
}

/// The result of probing every backend.
#[derive(Clone, Debug)]
pub(crate) struct Report {
    redis: Probe,
    database: Probe,
    limiter_degraded: bool,
}

impl Report {
    /// Ready to serve: every configured backend answers.
    pub(crate) fn ready(&self) -> bool {
        !matches!(self.redis, Probe::Down(_)) && !matches!(self.database, Probe::Down(_))
    }

    pub(crate) fn to_json(&self) -> Value {
        let status = if self.ready() && !self.limiter_degraded {
            "ok"
        } else {
            "degraded"
        };
        json!({ "status": status, "services": self.services_json() })
    }

    /// Each backend's state, as `/health` and `/ready` report it.
    pub(crate) fn services_json(&self) -> Value {
        json!({
            "redis": self.redis.to_json(),
            "database": self.database.to_json(),
        })
    }
}

impl Services {
    /// Probes every configured backend, concurrently.
    pub(crate) async fn check(&self) -> Report {
        let redis = async {
            match &self.redis {
                None => Probe::Disabled,
                Some(limiter) => match tokio::time::timeout(PROBE_TIMEOUT, limiter.ping()).await {
                    Ok(Ok(latency)) => Probe::Up(latency),
                    Ok(Err(error)) => Probe::Down(error.to_string()),
                    Err(_) => Probe::Down(format!("no answer within {PROBE_TIMEOUT:?}")),
                },
            }
        };
        let database = async {
            match &self.database {
                None => Probe::Disabled,
                Some(ledger) => {
                    let started = Instant::now();
                    match tokio::time::timeout(PROBE_TIMEOUT, ledger.ping()).await {
                        Ok(Ok(())) => Probe::Up(started.elapsed()),
                        Ok(Err(error)) => Probe::Down(error.to_string()),
                        Err(_) => Probe::Down(format!("no answer within {PROBE_TIMEOUT:?}")),
                    }
                }
            }
        };
        let (redis, database) = tokio::join!(redis, database);
        let limiter_degraded = self.redis.as_ref().is_some_and(RedisLimiter::is_degraded);
        Report {
            redis,
            database,
            limiter_degraded,
        }
    }

    /// The limiter's decisions made without Redis, so far.
    pub(crate) fn limiter_degraded(&self) -> DegradedCounts {
        self.redis
            .as_ref()
            .map(|limiter| {
                let stats = limiter.stats();
                DegradedCounts {
                    fail_open: stats.failed_open,
                    fail_closed: stats.failed_closed,
                    local_fallback: stats.fallback_decisions,
                }
            })
            .unwrap_or_default()
    }
}

/// The last probe, answered to every caller for `ttl`: a flood of `/health` costs the backends
/// one probe per period, and concurrent callers wait for one probe rather than each running
/// their own.
#[derive(Debug)]
pub(crate) struct HealthCache {
    ttl: Duration,
    last: parking_lot::Mutex<Option<(Instant, Report)>>,
    probing: tokio::sync::Mutex<()>,
    /// Probes actually run (for `/metrics`).
    pub(crate) probes: prometheus::IntCounter,
}

impl HealthCache {
    pub(crate) fn new(ttl: Duration, probes: prometheus::IntCounter) -> Self {
        HealthCache {
            ttl,
            last: parking_lot::Mutex::new(None),
            probing: tokio::sync::Mutex::new(()),
            probes,
        }
    }

    fn fresh(&self) -> Option<Report> {
        let last = self.last.lock();
        let (at, report) = last.as_ref()?;
        (at.elapsed() < self.ttl).then(|| report.clone())
    }

    /// A report at most `ttl` old.
    pub(crate) async fn report(&self, services: &Services) -> Report {
        if let Some(report) = self.fresh() {
            return report;
        }
        let _one_at_a_time = self.probing.lock().await;
        // Someone else may have probed while this caller waited.
        if let Some(report) = self.fresh() {
            return report;
        }
        self.probes.inc();
        let report = services.check().await;
        *self.last.lock() = Some((Instant::now(), report.clone()));
        report
    }
}
