//! The TOML file's sections: tuning with safe defaults, each documented in
//! `docs/operations.md`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// What the limiter does when Redis is unreachable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum FailureModeName {
    /// Admit requests.
    FailOpen,
    /// Refuse requests with `Retry-After`.
    FailClosed,
    /// Enforce the limits per process with an in-memory limiter.
    #[default]
    LocalFallback,
    /// Answer `503`.
    Error,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RateLimitTuning {
    pub(crate) failure_mode: FailureModeName,
    #[serde(deserialize_with = "duration")]
    pub(crate) redis_timeout: Duration,
    /// With Redis: how many denials this process remembers until their wait ends, answering a
    /// client that keeps asking without a round trip (0: ask Redis every time).
    pub(crate) remembered_denials: usize,
}

impl Default for RateLimitTuning {
    fn default() -> Self {
        RateLimitTuning {
            failure_mode: FailureModeName::LocalFallback,
            redis_timeout: Duration::from_millis(250),
            remembered_denials: tollgate_ratelimit::denials::DEFAULT_MAX_ENTRIES,
        }
    }
}

/// Deadlines of a connection and a request.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// A client must send its request head within this.
    #[serde(deserialize_with = "duration")]
    pub header_read: Duration,
    /// Reading the body and answering must end within this.
    #[serde(deserialize_with = "duration")]
    pub request: Duration,
    /// After SIGTERM, how long `/ready` answers `503` while requests are still served, before
    /// the listener closes: long enough for a load balancer to take the process out of
    /// rotation (its health-check interval times the failures it waits for). SIGINT, or a
    /// second signal, skips what is left of it.
    #[serde(deserialize_with = "duration")]
    pub pre_drain: Duration,
    /// How long shutdown waits for requests in flight.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read: Duration::from_secs(10),
            request: Duration::from_secs(30),
            pre_drain: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct IdempotencyTuning {
    /// How long a duplicate waits for the request in flight before `409`.
    #[serde(deserialize_with = "duration")]
    pub(crate) wait: Duration,
    /// How long an owner holds a key before another request may take it over; longer than
    /// `processor.timeout`, the longest a charge can take.
    #[serde(deserialize_with = "duration")]
    pub(crate) lease: Duration,
    /// How long results are kept; longer than the lease.
    #[serde(deserialize_with = "duration")]
    pub(crate) ttl: Duration,
    /// How often expired records are deleted (in batches, until none is left).
    #[serde(deserialize_with = "duration")]
    pub(crate) cleanup_interval: Duration,
}

impl Default for IdempotencyTuning {
    fn default() -> Self {
        IdempotencyTuning {
            wait: Duration::from_secs(5),
            lease: Duration::from_secs(60),
            ttl: Duration::from_secs(24 * 3600),
            cleanup_interval: Duration::from_secs(10),
        }
    }
}

/// `[log]`: what a reload may change in the log.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogTuning {
    /// A `tracing` filter (`info`, `warn,payments_server=debug`); instead of `LOG_LEVEL`, and
    /// replaced by a reload.
    pub(crate) level: Option<String>,
}

/// What the server traces beyond its requests.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TelemetryTuning {
    /// A client span (`db.system.name`, `db.operation.name`) around each call to Redis and
    /// PostgreSQL: off by default (a span per statement is volume a trace backend pays for).
    pub(crate) backend_spans: bool,
}

/// What only tests and demos should turn on.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TestingTuning {
    /// `test_decline` and `test_timeout_after_charge` force an outcome; off, they are ordinary
    /// payment methods.
    pub(crate) payment_methods: bool,
    /// `POST /api/v1/simulate-concurrent` (one request, up to 100 payment attempts).
    pub(crate) simulate_concurrent: bool,
}

/// What one client may hold of the server.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LimitsTuning {
    /// Connections open at once, in all; past it, new ones get `503` and are closed. Default:
    /// the open-files limit less room for pools and files, at most 10 000.
    pub(crate) max_connections: Option<usize>,
    /// Connections open at once from one address; past it, `429` and closed.
    pub(crate) max_connections_per_ip: usize,
    /// The largest request head (request line and headers) read, in bytes.
    pub(crate) max_header_bytes: usize,
    /// Requests a minute from one address that no key vouches for (refused ones without a
    /// valid key, and the public routes); past it, `429`.
    pub(crate) anonymous_per_minute: u64,
    /// The same requests from all addresses together, in this process; past it, `429` for
    /// every stranger (never for a caller with a key).
    pub(crate) anonymous_ceiling_per_minute: u64,
    /// Requests without a valid key, and refusals (4xx), are logged as one line of counts per
    /// interval, not a line each (those lines are at debug level).
    #[serde(deserialize_with = "duration")]
    pub(crate) anonymous_log_interval: Duration,
}

impl Default for LimitsTuning {
    fn default() -> Self {
        LimitsTuning {
            max_connections: None,
            max_connections_per_ip: 256,
            max_header_bytes: 16 * 1024,
            anonymous_per_minute: 120,
            anonymous_ceiling_per_minute: 6_000,
            anonymous_log_interval: Duration::from_secs(10),
        }
    }
}

/// The audit trail's bounds.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AuditTuning {
    /// Refusals (429, 409, 422, validation) of one user, for one reason, are written as one
    /// entry per window with a count, so a flood costs a bounded number of rows.
    #[serde(deserialize_with = "duration")]
    pub(crate) refusal_window: Duration,
    /// Events the memory trail keeps in all (without PostgreSQL).
    pub(crate) memory_events: usize,
    /// Events the memory trail keeps for any one user.
    pub(crate) memory_events_per_user: usize,
}

impl Default for AuditTuning {
    fn default() -> Self {
        AuditTuning {
            refusal_window: Duration::from_secs(10),
            memory_events: 100_000,
            memory_events_per_user: 10_000,
        }
    }
}

/// `[database]`: the PostgreSQL connection pool.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DatabaseTuning {
    /// Connections this process opens at most.
    pub(crate) pool_size: usize,
    /// How long a request waits for a free connection, or for a new one to open, before it is
    /// answered `503`: a full pool must not hold requests until their deadline.
    #[serde(deserialize_with = "duration")]
    pub(crate) pool_timeout: Duration,
    /// Create the schema and tables at start-up (idempotent, under an advisory lock). `false`
    /// for a database user without `CREATE` rights: apply `payments-server migrations` with
    /// your own tool, and the server only checks the tables are there.
    pub(crate) migrate: bool,
    /// `false` behind a pooler in transaction mode (PgBouncer's `pool_mode = transaction`):
    /// each statement is then sent unnamed with its execution, since a statement prepared on
    /// one server connection does not exist on the next one the pooler hands out.
    pub(crate) prepared_statements: bool,
    /// The most payment writes of concurrent requests sent in one transaction (one commit);
    /// `1` sends each alone. A write arriving while no transaction is in flight goes at once.
    pub(crate) group_commit: usize,
    /// Group-commit transactions in flight at once, each on a connection of the pool.
    pub(crate) group_commit_writers: usize,
    /// While at most this many payment writes are in flight and no grouped transaction is
    /// being written, a write is sent at once, alone, on a connection of its own: at low
    /// concurrency writes run side by side instead of one transaction after another. `0`:
    /// every write waits for the group.
    pub(crate) group_commit_alone_up_to: usize,
}

impl Default for DatabaseTuning {
    fn default() -> Self {
        DatabaseTuning {
            pool_size: 20,
            pool_timeout: Duration::from_secs(5),
            migrate: true,
            prepared_statements: true,
            group_commit: 32,
            group_commit_writers: 1,
            group_commit_alone_up_to: 4,
        }
    }
}

impl DatabaseTuning {
    /// The group commit of the payment writes, or `None` when each is sent alone.
    pub(crate) fn group_commit(&self) -> Option<tollgate_backend::group_commit::GroupCommitConfig> {
        (self.group_commit > 1).then(|| {
            tollgate_backend::group_commit::GroupCommitConfig::default()
                .max_batch(self.group_commit)
                .writers(self.group_commit_writers)
                .alone_up_to(self.group_commit_alone_up_to)
        })
    }

    /// How every store sends its statements.
    pub(crate) fn statement_mode(&self) -> tollgate_backend::postgres::StatementMode {
        if self.prepared_statements {
            tollgate_backend::postgres::StatementMode::Prepared
        } else {
            tollgate_backend::postgres::StatementMode::Unnamed
        }
    }
}

/// How the server talks to one Redis (`REDIS_URL`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RedisConnectionKind {
    /// A pool of `pool_size` connections; each checkout is verified with a `PING`.
    Pool,
    /// One connection shared by every request, commands pipelined on it, re-established by
    /// itself after a failure: one round trip per call.
    #[default]
    Multiplexed,
}

/// `[redis]`: the connection to Redis.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RedisTuning {
    /// `pool` or `multiplexed` (ignored for a cluster, which is always multiplexed).
    pub(crate) connection: RedisConnectionKind,
    /// Connections this process opens at most (each is busy for one round trip per decision).
    pub(crate) pool_size: usize,
    /// As `database.pool_timeout` (for a multiplexed connection or a cluster: connecting, and
    /// each answer); a limiter decision also stops at `rate_limit.redis_timeout`.
    #[serde(deserialize_with = "duration")]
    pub(crate) pool_timeout: Duration,
}

impl Default for RedisTuning {
    fn default() -> Self {
        RedisTuning {
            connection: RedisConnectionKind::Multiplexed,
            pool_size: 16,
            pool_timeout: Duration::from_secs(2),
        }
    }
}

/// `/health` and `/ready`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HealthTuning {
    /// How long one probe of the backends answers every caller: a flood of probes costs the
    /// database one query per period.
    #[serde(deserialize_with = "duration")]
    pub(crate) cache: Duration,
}

impl Default for HealthTuning {
    fn default() -> Self {
        HealthTuning {
            cache: Duration::from_secs(1),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ProcessorTuning {
    /// How long a charge may take before its answer counts as lost (the payment stays pending
    /// and the retry reconciles); shorter than `idempotency.lease`.
    #[serde(deserialize_with = "duration")]
    pub(crate) timeout: Duration,
    /// Simulated processing time per charge.
    #[serde(deserialize_with = "duration")]
    pub(crate) latency: Duration,
    /// Share of charges declined (0–1).
    pub(crate) decline_rate: f64,
    /// Share of charges failing with a processor error after charging (0–1).
    pub(crate) failure_rate: f64,
    /// With `PROCESSOR_URL`: how long one attempt may take before it is retried.
    #[serde(deserialize_with = "duration")]
    pub(crate) attempt_timeout: Duration,
    /// With `PROCESSOR_URL`: attempts per call, the first included (retries stop earlier when
    /// `timeout` would pass or the retry budget is spent).
    pub(crate) max_attempts: u32,
}

impl Default for ProcessorTuning {
    fn default() -> Self {
        ProcessorTuning {
            timeout: Duration::from_secs(10),
            latency: Duration::from_millis(20),
            decline_rate: 0.0,
            failure_rate: 0.0,
            attempt_timeout: Duration::from_secs(2),
            max_attempts: 4,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct BreakerTuning {
    /// Calls in the breaker's sliding window.
    pub(crate) window_calls: u32,
    /// Open at this failure percentage.
    pub(crate) failure_rate_threshold: u8,
    /// No decision before this many calls.
    pub(crate) minimum_calls: u32,
    /// How long the breaker stays open before probing.
    #[serde(deserialize_with = "duration")]
    pub(crate) wait_in_open: Duration,
}

impl Default for BreakerTuning {
    fn default() -> Self {
        BreakerTuning {
            window_calls: 50,
            failure_rate_threshold: 50,
            minimum_calls: 20,
            wait_in_open: Duration::from_secs(30),
        }
    }
}

/// `"250ms"`, `"30s"`, `"24h"`.
pub(crate) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
}
