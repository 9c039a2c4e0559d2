//! `/health` and `/ready`: each configured backend probed with a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::IntGaugeVec;
use serde_json::{Value, json};
use tollgate_audit::postgres::PostgresAuditLog;
use tollgate_ratelimit::denials::DenialCache;
use tollgate_ratelimit::redis::RedisLimiter;

use crate::ledger::Ledger;
use crate::live::LiveDuration;
use crate::metrics::BackendSnapshot;
use crate::timed::TimedLimiter;

/// A probe must answer within this, or the service counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The Redis limiter behind its in-process memory of denials.
pub(crate) type RememberedDenials = DenialCache<TimedLimiter<RedisLimiter>>;

/// The backends, as the health checks and the metrics see them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Services {
    /// The Redis rate limiter (its pool also serves idempotency records when there is no
    /// database).
    pub(crate) redis: Option<RedisLimiter>,
    /// The denials answered in process in front of it, with `rate_limit.remembered_denials`.
    pub(crate) denials: Option<Arc<RememberedDenials>>,
    /// The PostgreSQL ledger.
    pub(crate) database: Option<Arc<dyn Ledger>>,
    /// The pools, for their use in `/metrics`.
    pub(crate) redis_pool: Option<deadpool_redis::Pool>,
    pub(crate) database_pool: Option<deadpool_postgres::Pool>,
    /// The PostgreSQL audit log's writer, for its queue in `/metrics`.
    pub(crate) audit_writer: Option<Arc<PostgresAuditLog>>,
    /// This process cannot serve without Redis: it holds the idempotency records, or the
    /// limiter refuses (or fails) without it. Otherwise a Redis outage degrades the limits
    /// but every request is still served, and readiness must not take the whole fleet out of
    /// the load balancer at once.
    pub(crate) redis_required: bool,
}

/// One backend's state. What went wrong stays in the log: the probes answer anyone.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Probe {
    Disabled,
    Up(Duration),
    /// The backend answered with an error, or the connection failed (the error, for the log).
    Down(String),
    /// No answer within [`PROBE_TIMEOUT`].
    TimedOut,
}

impl Probe {
    fn is_down(&self) -> bool {
        matches!(self, Probe::Down(_) | Probe::TimedOut)
    }

    fn to_json(&self, required: bool) -> Value {
        match self {
            Probe::Disabled => json!({ "status": "disabled", "latency_ms": null }),
            Probe::Up(latency) => json!({
                "status": "up",
                "required": required,
                "latency_ms": (latency.as_secs_f64() * 1e6).round() / 1e3,
            }),
            Probe::Down(_) => json!({
                "status": "down",
                "required": required,
                "latency_ms": null,
                "error": "unavailable",
            }),
            Probe::TimedOut => json!({
                "status": "down",
                "required": required,
                "latency_ms": null,
                "error": "timeout",
            }),
        }
    }

    /// The log's account of the change from `before` (if it changed in a way worth a line).
    fn log_change(&self, before: Option<&Probe>, backend: &str) {
        let was_down = before.is_some_and(Probe::is_down);
        match self {
            Probe::Down(error) if !was_down => {
                tracing::warn!(backend, %error, "backend down");
            }
            Probe::TimedOut if !was_down => {
                tracing::warn!(backend, timeout = ?PROBE_TIMEOUT, "backend down: no answer");
            }
            Probe::Up(_) if was_down => tracing::info!(backend, "backend back up"),
            _ => {}
        }
    }
}

/// The result of probing every backend.
#[derive(Clone, Debug)]
pub(crate) struct Report {
    redis: Probe,
    database: Probe,
    redis_required: bool,
    limiter_degraded: bool,
}

impl Report {
    /// Able to serve: every backend this process cannot do without answers. PostgreSQL is
    /// always one when configured; Redis only when [`Services::redis_required`].
    pub(crate) fn ready(&self) -> bool {
        let required_redis_down = self.redis_required && self.redis.is_down();
        !self.database.is_down() && !required_redis_down
    }

    /// Everything answers and the limiter decides with Redis.
    fn healthy(&self) -> bool {
        !self.database.is_down() && !self.redis.is_down() && !self.limiter_degraded
    }

    pub(crate) fn to_json(&self) -> Value {
        let status = if self.healthy() { "ok" } else { "degraded" };
        json!({ "status": status, "ready": self.ready(), "services": self.services_json() })
    }

    /// Each backend's state, as `/health` and `/ready` report it.
    pub(crate) fn services_json(&self) -> Value {
        json!({
            "redis": self.redis.to_json(self.redis_required),
            "database": self.database.to_json(true),
        })
    }

    /// Sets the `backend_up` gauge and logs what changed since `before`.
    fn publish(&self, before: Option<&Report>, up: &IntGaugeVec) {
        for (backend, probe, earlier) in [
            ("redis", &self.redis, before.map(|r| &r.redis)),
            ("database", &self.database, before.map(|r| &r.database)),
        ] {
            probe.log_change(earlier, backend);
            if *probe != Probe::Disabled {
                up.with_label_values(&[backend])
                    .set(i64::from(!probe.is_down()));
            }
        }
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
                    Ok(Err(error)) => Probe::Down(crate::error_chain(&error)),
                    Err(_) => Probe::TimedOut,
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
                        Ok(Err(error)) => Probe::Down(crate::error_chain(&error)),
                        Err(_) => Probe::TimedOut,
                    }
                }
            }
        };
        let (redis, database) = tokio::join!(redis, database);
        let limiter_degraded = self.redis.as_ref().is_some_and(RedisLimiter::is_degraded);
        Report {
            redis,
            database,
            redis_required: self.redis_required,
            limiter_degraded,
        }
    }

    /// What `/metrics` shows of the backends, read now.
    pub(crate) fn snapshot(&self) -> BackendSnapshot {
        let pools = [
            (
                "redis",
                self.redis_pool.as_ref().map(deadpool_redis::Pool::status),
            ),
            (
                "database",
                self.database_pool
                    .as_ref()
                    .map(deadpool_postgres::Pool::status),
            ),
        ];
        BackendSnapshot {
            pools: pools
                .into_iter()
                .filter_map(|(name, status)| Some((name, status?)))
                .collect(),
            redis: self.redis.as_ref().map(RedisLimiter::stats),
            remembered_denials: self.denials.as_ref().map(|cache| cache.answered()),
            audit: self.audit_writer.as_ref().map(|writer| writer.stats()),
        }
    }
}

/// The last probe, answered to every caller for `ttl`: a flood of `/health` costs the backends
/// one probe per period, and concurrent callers wait for one probe rather than each running
/// their own.
#[derive(Debug)]
pub(crate) struct HealthCache {
    /// `health.cache`, replaced by a reload.
    pub(crate) ttl: LiveDuration,
    last: parking_lot::Mutex<Option<(Instant, Report)>>,
    probing: tokio::sync::Mutex<()>,
    /// Probes actually run (for `/metrics`).
    probes: prometheus::IntCounter,
    /// Each probed backend: 1 up, 0 down (for `/metrics`).
    up: IntGaugeVec,
}

impl HealthCache {
    pub(crate) fn new(ttl: Duration, probes: prometheus::IntCounter, up: IntGaugeVec) -> Self {
        HealthCache {
            ttl: LiveDuration::new(ttl),
            last: parking_lot::Mutex::new(None),
            probing: tokio::sync::Mutex::new(()),
            probes,
            up,
        }
    }

    fn fresh(&self) -> Option<Report> {
        let last = self.last.lock();
        let (at, report) = last.as_ref()?;
        (at.elapsed() < self.ttl.get()).then(|| report.clone())
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
        let mut last = self.last.lock();
        report.publish(last.as_ref().map(|(_, before)| before), &self.up);
        *last = Some((Instant::now(), report.clone()));
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(redis: Probe, database: Probe, redis_required: bool) -> Report {
        Report {
            redis,
            database,
            redis_required,
            limiter_degraded: false,
        }
    }

    #[test]
    fn ready_needs_only_what_the_process_cannot_serve_without() {
        let up = || Probe::Up(Duration::from_millis(1));
        let down = || Probe::Down("connection refused".to_owned());
        assert!(report(up(), up(), true).ready());
        assert!(report(down(), up(), false).ready(), "Redis optional");
        assert!(report(Probe::TimedOut, Probe::Disabled, false).ready());
        assert!(!report(down(), up(), true).ready(), "Redis holds the keys");
        assert!(!report(Probe::TimedOut, up(), true).ready());
        assert!(!report(up(), down(), false).ready(), "PostgreSQL always");
        assert!(!report(Probe::Disabled, Probe::TimedOut, false).ready());
    }

    #[test]
    fn anonymous_callers_get_fixed_messages() {
        let degraded = report(
            Probe::Down("connection refused (os error 111) at 10.0.0.7:6379".to_owned()),
            Probe::TimedOut,
            false,
        );
        let json = degraded.to_json();
        assert_eq!(json["status"], "degraded");
        assert_eq!(json["ready"], false);
        assert_eq!(json["services"]["redis"]["error"], "unavailable");
        assert_eq!(json["services"]["database"]["error"], "timeout");
        assert!(!json.to_string().contains("10.0.0.7"), "{json}");
    }
}
