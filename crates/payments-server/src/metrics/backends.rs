//! What `/metrics` shows of the process and its backends: the build, the process (CPU, memory,
//! file descriptors), the connection pools, the Redis limiter's calls, the PostgreSQL audit
//! log's queue and writes, and what the idempotency layer did. Read when scraped: the
//! libraries keep their own counters, and these follow them. Also what the idempotency layer
//! and the rate limiter decided for each request.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};
use tollgate_audit::postgres::WriterStats;
use tollgate_ratelimit::redis::RedisStats;

use super::{counter, counters, gauge, gauges, must};

/// The backends as read at one scrape.
#[derive(Debug, Default)]
pub(crate) struct BackendSnapshot {
    /// Each configured pool (`redis`, `database`) and its state.
    pub(crate) pools: Vec<(&'static str, deadpool_postgres::Status)>,
    /// The Redis limiter's counters, with Redis configured.
    pub(crate) redis: Option<RedisStats>,
    /// Decisions answered from remembered denials, without Redis.
    pub(crate) remembered_denials: Option<u64>,
    /// The PostgreSQL audit log's queue and writer, with a database configured.
    pub(crate) audit: Option<WriterStats>,
}

impl BackendSnapshot {
    /// The limiter's decisions made without Redis, so far.
    pub(crate) fn degraded(&self) -> super::DegradedCounts {
        self.redis
            .map(|stats| super::DegradedCounts {
                fail_open: stats.failed_open,
                fail_closed: stats.failed_closed,
                local_fallback: stats.fallback_decisions,
            })
            .unwrap_or_default()
    }
}

/// A counter that follows a total counted elsewhere.
#[derive(Debug)]
struct Mirror {
    counter: IntCounter,
    seen: AtomicU64,
}

impl Mirror {
    fn new(registry: &Registry, name: &str, help: &str) -> Self {
        let counter = counter(registry, name, help);
        Mirror {
            counter,
            seen: AtomicU64::new(0),
        }
    }

    fn follow(&self, total: u64) {
        let before = self.seen.swap(total, Ordering::Relaxed);
        self.counter.inc_by(total.saturating_sub(before));
    }
}

/// The metrics of this module.
#[derive(Debug)]
pub(crate) struct BackendMetrics {
    /// Payment requests by what the idempotency layer did with them.
    pub(crate) idempotency_requests: IntCounterVec,
    /// Rate-limit decisions by binding policy and result.
    pub(crate) rate_limit_decisions: IntCounterVec,
    pool_connections: IntGaugeVec,
    pool_max: IntGaugeVec,
    pool_waiting: IntGaugeVec,
    redis_calls: Mirror,
    redis_errors: Mirror,
    remembered_denials: Mirror,
    audit_queue: IntGauge,
    audit_queue_capacity: IntGauge,
    audit_batches: Mirror,
    audit_events: Mirror,
    audit_failures: Mirror,
}

impl BackendMetrics {
    pub(crate) fn new(registry: &Registry) -> Self {
        let build = gauges(
            registry,
            "payments_server_build_info",
            "The running build (always 1), labelled with its version",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        #[cfg(target_os = "linux")]
        must(registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )));
        BackendMetrics {
            idempotency_requests: counters(
                registry,
                "idempotency_requests_total",
                "Payment requests by what the idempotency layer did (executed, replayed, conflict, \
                 mismatch, fenced, invalid_key, invalid_body, body_too_large, store_failed)",
                &["outcome"],
            ),
            rate_limit_decisions: counters(
                registry,
                "rate_limit_decisions_total",
                "Rate-limit decisions by binding policy (the one closest to its limit, or the one \
                 that denied) and result (allowed, denied; would-deny for a shadow policy that \
                 would have refused an admitted request)",
                &["policy", "result"],
            ),
            pool_connections: gauges(
                registry,
                "connection_pool_connections",
                "Open connections of a pool (redis, database), in use or idle",
                &["pool", "state"],
            ),
            pool_max: gauges(
                registry,
                "connection_pool_max_connections",
                "The most connections a pool opens",
                &["pool"],
            ),
            pool_waiting: gauges(
                registry,
                "connection_pool_waiting",
                "Requests waiting for a pool's connection",
                &["pool"],
            ),
            redis_calls: Mirror::new(
                registry,
                "rate_limiter_redis_calls_total",
                "Calls the Redis limiter made that Redis answered",
            ),
            redis_errors: Mirror::new(
                registry,
                "rate_limiter_redis_errors_total",
                "Calls the Redis limiter made that failed or timed out",
            ),
            remembered_denials: Mirror::new(
                registry,
                "rate_limiter_remembered_denials_total",
                "Rate-limit checks answered 429 from a denial Redis made earlier, without asking it",
            ),
            audit_queue: gauge(
                registry,
                "audit_queue_events",
                "Audit events waiting for the PostgreSQL writer",
            ),
            audit_queue_capacity: gauge(
                registry,
                "audit_queue_capacity",
                "Audit events the queue holds before requests wait for the writer",
            ),
            audit_batches: Mirror::new(
                registry,
                "audit_batches_written_total",
                "Batches of audit events written to PostgreSQL",
            ),
            audit_events: Mirror::new(
                registry,
                "audit_events_written_total",
                "Audit events written to PostgreSQL through the queue",
            ),
            audit_failures: Mirror::new(
                registry,
                "audit_batch_failures_total",
                "Audit batch writes that failed (each is retried)",
            ),
        }
    }

    /// Brings the gauges and the followed counters to `snapshot`.
    pub(crate) fn observe(&self, snapshot: &BackendSnapshot) {
        for (pool, status) in &snapshot.pools {
            let idle = i64::try_from(status.available).unwrap_or(i64::MAX);
            let open = i64::try_from(status.size).unwrap_or(i64::MAX);
            let set = |gauges: &IntGaugeVec, labels: &[&str], value: i64| {
                gauges.with_label_values(labels).set(value);
            };
            set(&self.pool_connections, &[pool, "idle"], idle);
            set(&self.pool_connections, &[pool, "in_use"], open - idle);
            set(
                &self.pool_max,
                &[pool],
                i64::try_from(status.max_size).unwrap_or(i64::MAX),
            );
            set(
                &self.pool_waiting,
                &[pool],
                i64::try_from(status.waiting).unwrap_or(i64::MAX),
            );
        }
        if let Some(answered) = snapshot.remembered_denials {
            self.remembered_denials.follow(answered);
        }
        if let Some(redis) = snapshot.redis {
            self.redis_calls.follow(redis.redis_calls);
            self.redis_errors.follow(redis.redis_errors);
        }
        if let Some(audit) = snapshot.audit {
            self.audit_queue
                .set(i64::try_from(audit.queued).unwrap_or(i64::MAX));
            self.audit_queue_capacity
                .set(i64::try_from(audit.capacity).unwrap_or(i64::MAX));
            self.audit_batches.follow(audit.batches_written);
            self.audit_events.follow(audit.events_written);
            self.audit_failures.follow(audit.batch_failures);
        }
    }
}
