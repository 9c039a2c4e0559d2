//! The in-process backend: sharded, bounded, with idle keys forgotten automatically.
//!
//! Keys are spread over many lock-guarded shards (a multiple of the core count, each on its own
//! cache line) so that unrelated keys rarely contend. A single-policy decision on a tracked GCRA
//! or sliding-window key holds its shard's shared lock and makes one compare-and-swap on the key's
//! state (a timestamp, or a window's index and counts packed into one word), so such decisions
//! never wait for each other. Any other decision locks its shards exclusively, in
//! index order (no deadlock), decides every key, and commits only if all admit: a multi-policy
//! decision is atomic, and a denial consumes nothing.
//!
//! Memory stays bounded without a cleanup thread: every `len` insertions into a shard sweep it,
//! dropping keys whose state has been back to "fresh" for a grace period (amortised O(1) per
//! insertion), and a shard at its share of [`MemoryLimiterBuilder::max_keys`] evicts the key
//! closest to idle among a small sample before inserting. Evicting a live key can only make the limiter more permissive for
//! that key, so it is counted ([`MemoryLimiter::live_evictions`]) to tell you to raise the bound.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tollgate_ratelimit::clock::{ManualClock, Timestamp};
//! use tollgate_ratelimit::{Algorithm, MemoryLimiter, Policy, PolicyKey, Scope};
//!
//! let clock = ManualClock::starting_at(Timestamp::from_secs(1_000));
//! let limiter = MemoryLimiter::builder().clock(clock.clone()).build();
//! let policy = Arc::new(Policy::new("per-user", Scope::User,
//!     Algorithm::sliding_log(2, Duration::from_secs(1)))?);
//! let keys = [PolicyKey::new(policy, "alice")];
//!
//! assert!(limiter.check_now(&keys, 1)?.is_allowed());
//! assert!(limiter.check_now(&keys, 1)?.is_allowed());
//! let denied = limiter.check_now(&keys, 1)?;
//! assert_eq!(denied.retry_after(), Some(Duration::from_secs(1)));
//! clock.advance(Duration::from_secs(1));
//! assert!(limiter.check_now(&keys, 1)?.is_allowed());
//! # Ok::<(), tollgate_ratelimit::Error>(())
//! ```

mod mode;
mod shard;
mod table;
mod window_slot;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::{Clock, SystemClock, Timestamp};
use crate::decision::{Decision, PolicyDecision};
use crate::policy::{PolicyKey, Quota};
use crate::{Error, RateLimiter, validate};
use mode::Mode;
use parking_lot::RwLockWriteGuard;
use shard::{Limits, Shard, ShardMap, gcra_quota};

/// Default bound on tracked keys: 2^20, about 56 MiB of GCRA keys or 73 MiB of sliding-window
/// keys (measured at one million keys; see `docs/performance.md`).
pub const DEFAULT_MAX_KEYS: usize = 1 << 20;

struct Inner<C> {
    shards: Box<[Shard]>,
    clock: C,
    limits: Limits,
    live_evictions: AtomicU64,
}

/// Rate limiter state in this process's memory. Clones share the same state.
pub struct MemoryLimiter<C = SystemClock> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for MemoryLimiter<C> {
    fn clone(&self) -> Self {
        MemoryLimiter {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: Clock> fmt::Debug for MemoryLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLimiter")
            .field("shards", &self.inner.shards.len())
            .field("limits", &self.inner.limits)
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

/// Builds a [`MemoryLimiter`].
#[derive(Debug)]
pub struct MemoryLimiterBuilder<C = SystemClock> {
    clock: C,
    shards: usize,
    max_keys: usize,
    idle_grace: Duration,
}

impl MemoryLimiter {
    /// A limiter on the system clock with the default bounds.
    pub fn new() -> Self {
        MemoryLimiter::builder().build()
    }

    /// A builder: clock, shard count, key bound.
    pub fn builder() -> MemoryLimiterBuilder {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        MemoryLimiterBuilder {
            clock: SystemClock::new(),
            shards: (cores * 16).next_power_of_two().max(64),
            max_keys: DEFAULT_MAX_KEYS,
            idle_grace: Duration::from_secs(10),
        }
    }
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        MemoryLimiter::new()
    }
}

impl<C: Clock> MemoryLimiterBuilder<C> {
    /// The clock decisions are taken on (a [`ManualClock`](crate::clock::ManualClock) in tests).
    pub fn clock<D: Clock>(self, clock: D) -> MemoryLimiterBuilder<D> {
        MemoryLimiterBuilder {
            clock,
            shards: self.shards,
            max_keys: self.max_keys,
            idle_grace: self.idle_grace,
        }
    }

    /// Number of shards, rounded up to a power of two (default: 16 per core, at least 64).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.max(1).next_power_of_two();
        self
    }

    /// The most keys kept at once (default [`DEFAULT_MAX_KEYS`]).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(1);
        self
    }

    /// How long a key must have been idle (its state back to "fresh") before a sweep forgets it
    /// (default 10 s). Forgetting is always safe; the grace only avoids re-inserting hot keys.
    pub fn idle_grace(mut self, grace: Duration) -> Self {
        self.idle_grace = grace;
        self
    }

    /// The limiter.
    pub fn build(self) -> MemoryLimiter<C> {
        let shards = (0..self.shards)
            .map(|_| Shard(parking_lot::RwLock::new(ShardMap::new())))
            .collect();
        MemoryLimiter {
            inner: Arc::new(Inner {
                shards,
                clock: self.clock,
                limits: Limits {
                    max_keys_per_shard: self.max_keys.div_ceil(self.shards).max(1),
                    idle_grace: crate::clock::duration_to_micros(self.idle_grace),
                },
                live_evictions: AtomicU64::new(0),
            }),
        }
    }
}

impl<C: Clock> MemoryLimiter<C> {
    fn shard_index(&self, key: &PolicyKey) -> usize {
        // The high half picks the shard; the low half indexes the shard's table.
        (key.hash128() >> 64) as usize & (self.inner.shards.len() - 1)
    }

    fn shard(&self, key: &PolicyKey) -> &parking_lot::RwLock<ShardMap> {
        &self.inner.shards[self.shard_index(key)].0
    }

    fn lock(&self, index: usize) -> RwLockWriteGuard<'_, ShardMap> {
        self.inner.shards[index].0.write()
    }

    /// [`RateLimiter::check`] without the async wrapper: the memory backend never waits.
    pub fn check_now<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
        self.decide(keys, cost, Mode::Check)
    }

    /// [`RateLimiter::peek`] without the async wrapper.
    pub fn peek_now<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
        self.decide(keys, cost, Mode::Peek)
    }

    /// [`RateLimiter::refund`] without the async wrapper.
    pub fn refund_now(&self, keys: &[PolicyKey], cost: u64) -> Result<(), Error> {
        validate(keys, cost)?;
        let now = self.inner.clock.now().as_micros();
        for key in keys {
            let (hash, quota) = (key.hash128(), key.policy().quota());
            let shard = self.shard(key);
            match gcra_quota(quota) {
                Some((interval, _)) => shard.read().refund_gcra(hash, interval, now, cost),
                None => shard.write().refund(hash, quota, now, cost),
            }
        }
        Ok(())
    }

    /// [`RateLimiter::reset`] without the async wrapper.
    pub fn reset_now(&self, keys: &[PolicyKey]) {
        for key in keys {
            self.shard(key).write().forget(key.hash128());
        }
    }

    /// Keys currently tracked (locks every shard in turn; for metrics, not the hot path).
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| s.0.read().len()).sum()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live keys evicted because the key bound was reached (each may have been given fresh quota).
    pub fn live_evictions(&self) -> u64 {
        self.inner.live_evictions.load(Ordering::Relaxed)
    }

    fn decide<'k>(
        &self,
        keys: &'k [PolicyKey],
        cost: u64,
        mode: Mode,
    ) -> Result<Decision<'k>, Error> {
        validate(keys, cost)?;
        // Consuming nothing is looking: a zero-cost check must not grow a sliding log.
        let mode = if cost == 0 { Mode::Peek } else { mode };
        let now = self.inner.clock.now();
        if let [key] = keys {
            return Ok(self.decide_one(key, cost, now, mode));
        }

        // Lock every shard involved, in index order, so concurrent multi-key decisions never
        // deadlock and the whole decision is atomic.
        let indices: Vec<usize> = keys.iter().map(|k| self.shard_index(k)).collect();
        let mut order = indices.clone();
        order.sort_unstable();
        order.dedup();
        let slots: Vec<usize> = indices
            .iter()
            .map(|i| order.binary_search(i).unwrap_or(0))
            .collect();
        let mut guards: Vec<RwLockWriteGuard<'_, ShardMap>> =
            order.iter().map(|&i| self.lock(i)).collect();
        let (decision, evicted) = self.decide_locked(keys, &mut guards, &slots, cost, now, mode);
        drop(guards);
        self.count_evictions(evicted);
        Ok(decision)
    }

    /// The common case, one key: a compare-and-swap under the shared lock for a tracked GCRA
    /// key, the exclusive lock otherwise (another algorithm, or a key to insert).
    #[inline]
    fn decide_one<'k>(
        &self,
        key: &'k PolicyKey,
        cost: u64,
        now: Timestamp,
        mode: Mode,
    ) -> Decision<'k> {
        let (hash, quota, at) = (key.hash128(), key.policy().quota(), now.as_micros());
        let shard = self.shard(key);
        // The shared guard is dropped at the end of the statement, before any exclusive lock.
        let tracked = match quota {
            Quota::SlidingLog { .. } => None,
            _ => shard.read().decide_tracked(hash, quota, at, cost, mode),
        };
        if let Some((verdict, status)) = tracked {
            return Decision::single(now, policy_decision(key, verdict, status));
        }
        let (verdict, status, evicted) =
            shard
                .write()
                .decide_one(hash, quota, at, cost, mode, self.inner.limits);
        self.count_evictions(evicted);
        Decision::single(now, policy_decision(key, verdict, status))
    }

    /// Decides every key, commits if all admit (and this is a check), and reports; `slots[i]` is
    /// the index in `guards` of key `i`'s shard. Returns the decision and the live evictions.
    fn decide_locked<'k>(
        &self,
        keys: &'k [PolicyKey],
        guards: &mut [RwLockWriteGuard<'_, ShardMap>],
        slots: &[usize],
        cost: u64,
        now: Timestamp,
        mode: Mode,
    ) -> (Decision<'k>, u64) {
        let at = now.as_micros();
        let mut verdicts = [Ok(()); 8];
        let mut spilled = Vec::new();
        let verdicts: &mut [Result<(), u64>] = if keys.len() <= verdicts.len() {
            &mut verdicts[..keys.len()]
        } else {
            spilled.resize(keys.len(), Ok(()));
            &mut spilled
        };
        for (i, key) in keys.iter().enumerate() {
            verdicts[i] = guards[slots[i]].admits(key.hash128(), key.policy().quota(), at, cost);
        }
        let mut evicted = 0;
        if mode == Mode::Check && verdicts.iter().all(Result::is_ok) {
            for (i, key) in keys.iter().enumerate() {
                let quota = key.policy().quota();
                evicted +=
                    guards[slots[i]].consume(key.hash128(), quota, at, cost, self.inner.limits);
            }
        }
        let policies = keys
            .iter()
            .zip(verdicts.iter())
            .enumerate()
            .map(|(i, (key, &verdict))| {
                let status = guards[slots[i]].status(key.hash128(), key.policy().quota(), at);
                policy_decision(key, verdict, status)
            });
        (Decision::new(now, policies), evicted)
    }

    fn count_evictions(&self, evicted: u64) {
        if evicted > 0 {
            self.inner
                .live_evictions
                .fetch_add(evicted, Ordering::Relaxed);
        }
    }
}

use crate::telemetry::{self, Operation};

#[inline]
fn policy_decision(
    key: &PolicyKey,
    verdict: Result<(), u64>,
    status: crate::algorithm::Status,
) -> PolicyDecision<'_> {
    PolicyDecision::from_micros(key, status.remaining, status.reset_after, verdict.err())
}

impl<C: Clock> RateLimiter for MemoryLimiter<C> {
    async fn check<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
        let decide = async { self.check_now(keys, cost) };
        telemetry::observe("memory", Operation::Check, keys, cost, decide).await
    }

    async fn peek<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
        let decide = async { self.peek_now(keys, cost) };
        telemetry::observe("memory", Operation::Peek, keys, cost, decide).await
    }

    async fn refund(&self, keys: &[PolicyKey], cost: u64) -> Result<(), Error> {
        self.refund_now(keys, cost)
    }

    async fn reset(&self, keys: &[PolicyKey]) -> Result<(), Error> {
        self.reset_now(keys);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
