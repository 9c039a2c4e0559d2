//! The Redis backend: one Lua script call per decision, on the Redis server's clock.
//!
//! Each decision is one `EVALSHA` of the decision script (the Lua twin of the Rust arithmetic, in
//! `redis/scripts.rs`) over all of the request's keys (the `redis` crate's `Script` reloads the
//! script and retries on `NOSCRIPT`), so several
//! application processes share limits exactly as one would. Time is the Redis server's `TIME`,
//! never the application's, and every key carries an expiry at the instant its state becomes
//! equivalent to no state. Keys are `{prefix}{policy:subject}`: the braces are a Redis Cluster
//! hash tag per policy key. On a cluster ([`RedisConnection::Cluster`], feature `cluster`) a
//! decision is split per slot, each slot group atomic, and the groups that consumed are refunded
//! when another denies (see the [guide](crate::_guide#redis-cluster-and-atomicity)).
//!
//! When Redis cannot be reached the [`FailureMode`] decides: fail open, fail closed, decide with
//! a local [`MemoryLimiter`], or return the error. Each degraded decision is marked
//! ([`Decision::is_degraded`]) and counted ([`RedisLimiter::stats`]); the next call tries Redis
//! again, so recovery needs no restart.
//!
//! # Example
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tollgate_ratelimit::redis::deadpool_redis::{Config, Runtime};
//! use tollgate_ratelimit::redis::{FailureMode, RedisLimiter};
//! use tollgate_ratelimit::{PolicySet, RateLimiter, RequestContext};
//!
//! let pool = Config::from_url("redis://127.0.0.1:6379").create_pool(Some(Runtime::Tokio1))?;
//! let limiter = RedisLimiter::builder(pool)
//!     .key_prefix("myapp:rl:")
//!     .failure_mode(FailureMode::LocalFallback)
//!     .build();
//!
//! let keys = PolicySet::defaults().keys_for(&RequestContext::new().user("alice"));
//! let decision = limiter.check(&keys, 1).await?;
//! println!("allowed: {}, degraded: {}", decision.is_allowed(), decision.is_degraded());
//! # Ok(())
//! # }
//! ```
//!
//! On a Redis Cluster (feature `cluster`), the same limiter over a cluster connection:
//!
//! ```no_run
//! # #[cfg(feature = "cluster")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tollgate_ratelimit::redis::{RedisLimiter, redis};
//!
//! let nodes = ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"];
//! let cluster = redis::cluster::ClusterClient::new(nodes)?.get_async_connection().await?;
//! let limiter = RedisLimiter::builder(cluster).key_prefix("myapp:rl:").build();
//! # Ok(())
//! # }
//! ```

mod scripts;
#[cfg(feature = "cluster")]
mod slots;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::clock::{Clock, SystemClock, Timestamp};
use crate::decision::{Decision, PolicyDecision};
use crate::memory::MemoryLimiter;
use crate::policy::{PolicyKey, Quota};
use crate::{Error, RateLimiter, validate};

/// The pool crate this backend takes, re-exported so callers build pools of the same version.
pub use deadpool_redis;
/// The Redis client crate, re-exported so callers build cluster connections of the same version.
pub use redis;
pub use tollgate_backend::redis::RedisConnection;

/// What to do when Redis cannot be reached (or times out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureMode {
    /// Admit the request. Availability over enforcement; the decision reports full quota.
    FailOpen,
    /// Deny the request, asking the client to retry after the given delay.
    FailClosed {
        /// The `Retry-After` given to denied requests.
        retry_after: Duration,
    },
    /// Decide with an in-process [`MemoryLimiter`]: each process enforces the limits on its own,
    /// so N processes admit up to N× the limit while Redis is away.
    LocalFallback,
    /// Return the error to the caller.
    ReturnError,
}

/// Counters of what the limiter did; all monotonic since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Calls Redis answered (checks, peeks and refunds).
    pub redis_calls: u64,
    /// Calls to Redis that failed or timed out.
    pub redis_errors: u64,
    /// Requests admitted because Redis was unreachable ([`FailureMode::FailOpen`]).
    pub failed_open: u64,
    /// Requests denied because Redis was unreachable ([`FailureMode::FailClosed`]).
    pub failed_closed: u64,
    /// Decisions taken by the local fallback ([`FailureMode::LocalFallback`]).
    pub fallback_decisions: u64,
}

#[derive(Default)]
struct Counters {
    redis_calls: AtomicU64,
    redis_errors: AtomicU64,
    failed_open: AtomicU64,
    failed_closed: AtomicU64,
    fallback_decisions: AtomicU64,
}

struct Inner {
    connection: RedisConnection,
    prefix: String,
    script: redis::Script,
    clock: Option<Arc<dyn Clock>>,
    failure_mode: FailureMode,
    fallback: MemoryLimiter<Arc<dyn Clock>>,
    fallback_clock: Arc<dyn Clock>,
    timeout: Duration,
    counters: Counters,
    degraded: AtomicBool,
}

/// Rate limiter state in Redis, shared by every process that uses the same Redis and prefix.
/// Clones share the pool and counters.
#[derive(Clone)]
pub struct RedisLimiter {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("connection", &self.inner.connection)
            .field("prefix", &self.inner.prefix)
            .field("failure_mode", &self.inner.failure_mode)
            .field("timeout", &self.inner.timeout)
            .field("injected_clock", &self.inner.clock.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds a [`RedisLimiter`].
#[derive(Debug)]
pub struct RedisLimiterBuilder {
    connection: RedisConnection,
    prefix: String,
    clock: Option<Arc<dyn Clock>>,
    failure_mode: FailureMode,
    timeout: Duration,
    fallback_max_keys: usize,
}

impl RedisLimiter {
    /// A builder over a [`RedisConnection`]: a deadpool-redis pool, a multiplexed
    /// `ConnectionManager`, or (feature `cluster`) a Redis Cluster connection. Defaults: prefix `tollgate:rl:`, Redis server time, [`FailureMode::LocalFallback`],
    /// 250 ms timeout per decision.
    pub fn builder(connection: impl Into<RedisConnection>) -> RedisLimiterBuilder {
        RedisLimiterBuilder {
            connection: connection.into(),
            prefix: "tollgate:rl:".to_owned(),
            clock: None,
            failure_mode: FailureMode::LocalFallback,
            timeout: Duration::from_millis(250),
            fallback_max_keys: crate::memory::DEFAULT_MAX_KEYS,
        }
    }
}

impl RedisLimiterBuilder {
    /// Prefix of every key (lets several applications or tests share one Redis).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Decide on this clock instead of the Redis server's `TIME`. For deterministic tests and
    /// simulations only: in production, processes with skewed clocks would disagree.
    ///
    /// Redis still expires keys on its own clock, so with an injected clock each key is kept a
    /// minute past the instant its state becomes idle: a clock that stands still between two
    /// calls must not see its state vanish. Idle state decides like no state, so the margin
    /// changes no decision.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// What to do when Redis is unreachable.
    pub fn failure_mode(mut self, mode: FailureMode) -> Self {
        self.failure_mode = mode;
        self
    }

    /// The longest a decision may wait for a connection and the script's answer.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Key bound of the local fallback limiter.
    pub fn fallback_max_keys(mut self, max_keys: usize) -> Self {
        self.fallback_max_keys = max_keys;
        self
    }

    /// The limiter. Loads nothing yet: the script is loaded on first use.
    pub fn build(self) -> RedisLimiter {
        let fallback_clock: Arc<dyn Clock> = match &self.clock {
            Some(clock) => Arc::clone(clock),
            None => Arc::new(SystemClock::new()),
        };
        RedisLimiter {
            inner: Arc::new(Inner {
                connection: self.connection,
                prefix: self.prefix,
                script: redis::Script::new(scripts::DECIDE),
                clock: self.clock,
                failure_mode: self.failure_mode,
                fallback: MemoryLimiter::builder()
                    .clock(Arc::clone(&fallback_clock))
                    .max_keys(self.fallback_max_keys)
                    .build(),
                fallback_clock,
                timeout: self.timeout,
                counters: Counters::default(),
                degraded: AtomicBool::new(false),
            }),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Check = 0,
    Peek = 1,
    Refund = 2,
}

impl RedisLimiter {
    /// The Redis key of a policy key: prefix, then the storage key as a hash tag.
    pub fn redis_key(&self, key: &PolicyKey) -> String {
        format!("{}{{{}}}", self.inner.prefix, key.storage_key())
    }

    /// Counters since start.
    pub fn stats(&self) -> RedisStats {
        let c = &self.inner.counters;
        RedisStats {
            redis_calls: c.redis_calls.load(Ordering::Relaxed),
            redis_errors: c.redis_errors.load(Ordering::Relaxed),
            failed_open: c.failed_open.load(Ordering::Relaxed),
            failed_closed: c.failed_closed.load(Ordering::Relaxed),
            fallback_decisions: c.fallback_decisions.load(Ordering::Relaxed),
        }
    }

    /// Whether the last call to Redis failed (cleared by the next successful one).
    pub fn is_degraded(&self) -> bool {
        self.inner.degraded.load(Ordering::Relaxed)
    }

    /// Round-trip time of a `PING`, for health checks.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let started = Instant::now();
        let result = self.with_timeout(self.inner.connection.ping()).await;
        self.inner
            .degraded
            .store(result.is_err(), Ordering::Relaxed);
        result.map(|_| started.elapsed())
    }

    async fn with_timeout<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, tollgate_backend::Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.inner.timeout, work).await {
            Ok(result) => result.map_err(|failed| {
                let transient = failed.is_transient();
                Error::backend(failed.into_source(), transient)
            }),
            Err(_) => Err(Error::backend(
                format!("redis did not answer within {:?}", self.inner.timeout),
                true,
            )),
        }
    }

    /// The backend's name in telemetry: `redis` or `redis-cluster`.
    fn backend(&self) -> &'static str {
        #[cfg(feature = "cluster")]
        if self.inner.connection.is_cluster() {
            return "redis-cluster";
        }
        "redis"
    }

    /// Decides, consumes or refunds `keys` on Redis; the reply is
    /// `{now, (allowed, remaining, reset, retry)…}` in the order of `keys`.
    async fn run(&self, keys: &[PolicyKey], cost: u64, mode: Mode) -> Result<Vec<i64>, Error> {
        #[cfg(feature = "cluster")]
        let result = if self.inner.connection.is_cluster() {
            self.run_per_slot(keys, cost, mode).await
        } else {
            self.script(keys.iter(), cost, mode).await
        };
        #[cfg(not(feature = "cluster"))]
        let result = self.script(keys.iter(), cost, mode).await;
        // Log transitions, not every degraded decision: an outage must not flood the logs.
        let was_degraded = self.inner.degraded.swap(result.is_err(), Ordering::Relaxed);
        match (&result, was_degraded) {
            (Err(error), false) => tracing::warn!(
                %error,
                mode = ?self.inner.failure_mode,
                "redis rate limiter unreachable; degrading"
            ),
            (Ok(_), true) => tracing::info!("redis rate limiter reachable again"),
            _ => {}
        }
        result
    }

    /// One call of the script over `keys`, which must all live in one slot on a cluster.
    async fn script<'k>(
        &self,
        keys: impl Iterator<Item = &'k PolicyKey> + Clone,
        cost: u64,
        mode: Mode,
    ) -> Result<Vec<i64>, Error> {
        let mut invocation = self.inner.script.prepare_invoke();
        for key in keys.clone() {
            invocation.key(self.redis_key(key));
        }
        invocation.arg(mode as u8).arg(cost);
        match &self.inner.clock {
            Some(clock) => invocation.arg(clock.now().as_micros()),
            None => invocation.arg(""),
        };
        for key in keys {
            let (kind, a, b) = match key.policy().quota() {
                Quota::SlidingWindow { limit, window } => (1u8, limit, window),
                Quota::SlidingLog { limit, window } => (2, limit, window),
                Quota::Gcra {
                    interval,
                    tolerance,
                } => (3, interval, tolerance),
            };
            invocation.arg(kind).arg(a).arg(b);
        }
        let result = self
            .with_timeout(self.inner.connection.invoke(&invocation))
            .await;
        let counter = if result.is_ok() {
            &self.inner.counters.redis_calls
        } else {
            &self.inner.counters.redis_errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    /// [`run`](Self::run) on a cluster: one script per slot, all at once. Each slot group is
    /// decided atomically; when one group denies or fails, the groups that consumed are refunded,
    /// so a denied request ends up consuming nothing, as on one Redis.
    #[cfg(feature = "cluster")]
    async fn run_per_slot(
        &self,
        keys: &[PolicyKey],
        cost: u64,
        mode: Mode,
    ) -> Result<Vec<i64>, Error> {
        let groups = slots::groups(keys.iter().map(|key| self.redis_key(key)));
        if groups.len() == 1 {
            return self.script(keys.iter(), cost, mode).await;
        }
        let members = |group| slots::members(keys, group);
        let calls = groups.iter().map(|g| self.script(members(g), cost, mode));
        let mut replies = futures_util::future::join_all(calls).await;
        let consumed = |reply: &Result<Vec<i64>, Error>| {
            mode == Mode::Check && reply.as_ref().is_ok_and(|r| slots::all_admitted(r))
        };
        if mode == Mode::Check && !replies.iter().all(consumed) {
            let refunds = groups
                .iter()
                .zip(&replies)
                .enumerate()
                .filter(|(_, (_, reply))| consumed(reply))
                .map(|(at, (g, _))| async move {
                    (at, self.script(members(g), cost, Mode::Refund).await)
                });
            for (at, refund) in futures_util::future::join_all(refunds).await {
                match refund {
                    // What the group reports now: its quota back, every policy admitted.
                    Ok(after) => replies[at] = Ok(after),
                    Err(error) => tracing::warn!(
                        %error,
                        "could not refund a slot group after another denied; its quota stays \
                         consumed until its window passes"
                    ),
                }
            }
        }
        slots::merge(keys.len(), &groups, replies)
    }

    fn parse<'k>(keys: &'k [PolicyKey], reply: &[i64]) -> Result<Decision<'k>, Error> {
        let malformed = || {
            Error::backend(
                format!("unexpected script reply of {} values", reply.len()),
                false,
            )
        };
        let (&now, rest) = reply.split_first().ok_or_else(malformed)?;
        if rest.len() != keys.len() * 4 {
            return Err(malformed());
        }
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        let policies = keys
            .iter()
            .zip(rest.chunks_exact(4))
            .map(|(key, v)| {
                let retry = (v[0] == 0).then(|| micros(v[3]));
                PolicyDecision::new(key, u64::try_from(v[1]).unwrap_or(0), micros(v[2]), retry)
            })
            .collect::<Vec<_>>();
        Ok(Decision::new(
            Timestamp::from_micros(u64::try_from(now).unwrap_or(0)),
            policies,
        ))
    }

    async fn decide<'k>(
        &self,
        keys: &'k [PolicyKey],
        cost: u64,
        mode: Mode,
    ) -> Result<Decision<'k>, Error> {
        validate(keys, cost)?;
        if keys.is_empty() {
            return Ok(Decision::new(self.inner.now(), []));
        }
        // Consuming nothing is looking: a zero-cost check must not grow a sliding log.
        let mode = if cost == 0 { Mode::Peek } else { mode };
        match self.run(keys, cost, mode).await {
            Ok(reply) => Self::parse(keys, &reply),
            Err(error) => self.degrade(keys, cost, mode, error),
        }
    }

    fn degrade<'k>(
        &self,
        keys: &'k [PolicyKey],
        cost: u64,
        mode: Mode,
        error: Error,
    ) -> Result<Decision<'k>, Error> {
        let c = &self.inner.counters;
        tracing::debug!(%error, "degraded rate-limit decision");
        let now = self.inner.now();
        match self.inner.failure_mode {
            FailureMode::ReturnError => Err(error),
            FailureMode::LocalFallback => {
                c.fallback_decisions.fetch_add(1, Ordering::Relaxed);
                let decision = if mode == Mode::Peek {
                    self.inner.fallback.peek_now(keys, cost)?
                } else {
                    self.inner.fallback.check_now(keys, cost)?
                };
                Ok(decision.degraded())
            }
            FailureMode::FailOpen => {
                c.failed_open.fetch_add(1, Ordering::Relaxed);
                let full = |k: &'k PolicyKey| {
                    PolicyDecision::new(k, k.policy().capacity(), Duration::ZERO, None)
                };
                Ok(Decision::new(now, keys.iter().map(full)).degraded())
            }
            FailureMode::FailClosed { retry_after } => {
                c.failed_closed.fetch_add(1, Ordering::Relaxed);
                let empty =
                    |k: &'k PolicyKey| PolicyDecision::new(k, 0, retry_after, Some(retry_after));
                Ok(Decision::new(now, keys.iter().map(empty)).degraded())
            }
        }
    }
}

impl Inner {
    /// The application's idea of now, for decisions Redis did not take.
    fn now(&self) -> Timestamp {
        match &self.clock {
            Some(clock) => clock.now(),
            None => self.fallback_clock.now(),
        }
    }
}

use crate::telemetry::{self, Operation};

impl RateLimiter for RedisLimiter {
    async fn check<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
        let decide = self.decide(keys, cost, Mode::Check);
        telemetry::observe(self.backend(), Operation::Check, keys, cost, decide).await
    }

    async fn peek<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
        let decide = self.decide(keys, cost, Mode::Peek);
        telemetry::observe(self.backend(), Operation::Peek, keys, cost, decide).await
    }

    /// Refunds on Redis; if Redis is unreachable, refunds the local fallback (which is where a
    /// degraded check consumed) and reports the error only in [`FailureMode::ReturnError`].
    async fn refund(&self, keys: &[PolicyKey], cost: u64) -> Result<(), Error> {
        validate(keys, cost)?;
        if keys.is_empty() || cost == 0 {
            return Ok(());
        }
        match self.run(keys, cost, Mode::Refund).await {
            Ok(_) => Ok(()),
            Err(error) if self.inner.failure_mode == FailureMode::ReturnError => Err(error),
            Err(_) => self.inner.fallback.refund_now(keys, cost),
        }
    }

    /// Deletes each key's state on Redis (one key per script, so each goes to its own slot on a
    /// cluster) and in the local fallback. A Redis failure is reported whatever the failure
    /// mode: a reset that did not happen must not look done.
    async fn reset(&self, keys: &[PolicyKey]) -> Result<(), Error> {
        self.inner.fallback.reset_now(keys);
        let delete = redis::Script::new("redis.call('DEL', KEYS[1]) return 1");
        for key in keys {
            let mut invocation = delete.prepare_invoke();
            invocation.key(self.redis_key(key));
            self.with_timeout(self.inner.connection.invoke::<i64>(&invocation))
                .await?;
        }
        Ok(())
    }
}
