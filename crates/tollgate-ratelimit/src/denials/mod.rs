//! [`DenialCache`]: remembers denials for as long as they hold, so a client that keeps asking
//! after a `429` is refused in process, without a round trip to the limiter behind it.
//!
//! A denied request consumes nothing, and until the wait a denial reported has passed, the key
//! can only have less quota, never more: other requests (from this process or any other sharing
//! the backend) may consume some, none can add any. So a denial stays true until its
//! `retry_after`, for any cost at least the one denied, and answering it again from memory is
//! what the backend would answer. The wait is counted from when the backend was asked, not
//! from when its answer arrived, so a remembered denial ends no later than the real one however
//! long the answer took to come back. The one exception is a [`refund`](RateLimiter::refund): this
//! cache forgets the keys it refunds, but a refund made through another process is not seen
//! here, and a key it freed stays denied here until the remembered wait ends (never longer).
//! A denial holds for the terms it was decided on: once a key's policy has other limits (a
//! replaced table, another tier), the backend decides again.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tollgate_ratelimit::clock::{ManualClock, Timestamp};
//! use tollgate_ratelimit::denials::DenialCache;
//! use tollgate_ratelimit::{Algorithm, MemoryLimiter, Policy, PolicyKey, Scope};
//!
//! # fn main() -> Result<(), tollgate_ratelimit::Error> {
//! let clock = ManualClock::starting_at(Timestamp::from_secs(1_700_000_000));
//! let backend = MemoryLimiter::builder().clock(clock.clone()).build();
//! let limiter = DenialCache::builder(backend).clock(clock.clone()).build();
//! let bucket = Algorithm::token_bucket(1, Duration::from_secs(1), 1); // one a second
//! let policy = Arc::new(Policy::new("per-user", Scope::User, bucket)?);
//! let keys = [PolicyKey::new(policy, "alice")];
//!
//! assert!(limiter.check_now(&keys, 1)?.is_allowed());
//! let denied = limiter.check_now(&keys, 1)?; // asked the backend, and remembered
//! assert!(!denied.is_allowed());
//! assert_eq!(limiter.remembered(), 1);
//! assert!(!limiter.check_now(&keys, 1)?.is_allowed()); // answered from memory
//! clock.advance(denied.retry_after().expect("a wait"));
//! assert!(limiter.check_now(&keys, 1)?.is_allowed()); // the wait is over: the backend again
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::policy::Quota;
use crate::{Decision, Error, PolicyDecision, PolicyKey, RateLimiter};

/// How many denials a cache remembers by default, over all its shards.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

const SHARDS: usize = 16;

/// A denial, as remembered: until when (µs, by the cache's clock) it holds, and for which cost.
#[derive(Clone, Copy, Debug)]
struct Denied {
    /// The terms it was decided on: a key whose policy has changed since (a reload, another
    /// tier) may have more room, so the backend is asked again.
    quota: Quota,
    /// Until when it is answered from memory: `until`, or sooner under `max_memory`.
    forget_at: u64,
    until: u64,
    cost: u64,
    remaining: u64,
    reset_at: u64,
}

/// One shard: the denials of the keys whose hash falls here, and the soonest of their ends
/// (a full shard with nothing ended yet refuses new entries without a scan).
#[derive(Debug, Default)]
struct Shard {
    denied: HashMap<u128, Denied>,
    soonest: u64,
}

/// A [`RateLimiter`] that answers denials it has seen from memory until their wait ends, and
/// asks the limiter it wraps for everything else.
///
/// - [`check`](RateLimiter::check): denied at once if any key was denied for a cost no larger
///   than this one and its wait has not ended; the decision then lists those keys' policies
///   only (what the others would say is not known without asking), with their remembered
///   `remaining` and reset, and the wait that is left. Otherwise the wrapped limiter decides,
///   and each policy it denies is remembered (unless the decision is degraded: a fallback's
///   denial says nothing about the real quota).
/// - [`peek`](RateLimiter::peek) always asks the wrapped limiter, and remembers nothing.
/// - [`refund`](RateLimiter::refund) forgets the refunded keys, then refunds them.
///
/// Memory is bounded by [`DenialCacheBuilder::max_entries`]: ended denials are dropped when
/// room is needed, and while the cache is full of live ones new denials are simply not
/// remembered (those requests keep asking the wrapped limiter).
pub struct DenialCache<L, C = SystemClock> {
    inner: L,
    clock: C,
    shards: Box<[Mutex<Shard>]>,
    max_per_shard: usize,
    /// The longest a denial is answered from memory (µs), whatever its wait.
    max_memory: u64,
    answered: AtomicU64,
}

impl<L: fmt::Debug, C> fmt::Debug for DenialCache<L, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DenialCache")
            .field("inner", &self.inner)
            .field("max_entries", &(self.max_per_shard * self.shards.len()))
            .finish_non_exhaustive()
    }
}

/// Builds a [`DenialCache`].
#[derive(Debug)]
pub struct DenialCacheBuilder<L, C = SystemClock> {
    inner: L,
    clock: C,
    max_entries: usize,
    max_memory: Duration,
}

impl<L> DenialCache<L> {
    /// A builder over `inner`, with the system clock and [`DEFAULT_MAX_ENTRIES`].
    pub fn builder(inner: L) -> DenialCacheBuilder<L> {
        DenialCacheBuilder {
            inner,
            clock: SystemClock::new(),
            max_entries: DEFAULT_MAX_ENTRIES,
            max_memory: Duration::MAX,
        }
    }
}

impl<L, C> DenialCacheBuilder<L, C> {
    /// The clock that times the remembered waits (tests use a `ManualClock`). Only durations
    /// are taken from the wrapped limiter's decisions, so its clock may differ (Redis's time).
    pub fn clock<C2: Clock>(self, clock: C2) -> DenialCacheBuilder<L, C2> {
        DenialCacheBuilder {
            inner: self.inner,
            clock,
            max_entries: self.max_entries,
            max_memory: self.max_memory,
        }
    }

    /// The most denials remembered at once (at least one per shard).
    pub fn max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = max_entries;
        self
    }

    /// The longest a denial is answered from memory, however long its wait (unbounded by
    /// default): after that the wrapped limiter is asked again, so a reset or a refund made
    /// through another process is seen here within this time. The answers from memory still
    /// report the real wait.
    pub fn max_memory(mut self, max_memory: Duration) -> Self {
        self.max_memory = max_memory;
        self
    }

    /// The cache.
    pub fn build(self) -> DenialCache<L, C> {
        DenialCache {
            inner: self.inner,
            clock: self.clock,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            max_per_shard: self.max_entries.div_ceil(SHARDS).max(1),
            max_memory: micros(self.max_memory),
            answered: AtomicU64::new(0),
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl<L, C: Clock> DenialCache<L, C> {
    /// The limiter it wraps.
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// How many checks were answered from memory so far (each one a call the wrapped limiter
    /// did not get).
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// How many denials are remembered now, ended ones not yet dropped included.
    pub fn remembered(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).denied.len())
            .sum()
    }

    fn shard(&self, key: &PolicyKey) -> MutexGuard<'_, Shard> {
        // The low bits: the memory backend shards by the high ones, the two stay independent.
        lock(&self.shards[key.hash128() as usize % SHARDS])
    }

    /// The remembered denial of these keys for `cost`, if one still holds. Keys the wrapped
    /// limiter would refuse as a request (a repeated key, a cost over a capacity) are refused
    /// alike, remembered or not.
    fn remembered_denial<'k>(
        &self,
        keys: &'k [PolicyKey],
        cost: u64,
    ) -> Result<Option<Decision<'k>>, Error> {
        crate::validate(keys, cost)?;
        let now = self.clock.now();
        let at = now.as_micros();
        let mut denied = keys
            .iter()
            .filter_map(|key| {
                let hit = self.shard(key).denied.get(&key.hash128()).copied()?;
                let holds =
                    hit.forget_at > at && hit.cost <= cost && hit.quota == key.policy().quota();
                holds.then(|| {
                    let after = |end: u64| Duration::from_micros(end.saturating_sub(at));
                    PolicyDecision::new(
                        key,
                        hit.remaining,
                        after(hit.reset_at),
                        Some(after(hit.until)),
                    )
                })
            })
            .peekable();
        if denied.peek().is_none() {
            return Ok(None);
        }
        self.answered.fetch_add(1, Ordering::Relaxed);
        Ok(Some(Decision::new(now, denied)))
    }

    /// Remembers every policy `decision` denied for `cost`, its waits counted from `asked_at`:
    /// when the wrapped limiter was asked, which is no later than when it decided, so a
    /// remembered denial never outlasts the real one (by the round trip, or at all).
    fn remember(&self, decision: &Decision<'_>, cost: u64, asked_at: u64) {
        if decision.is_allowed() || decision.is_degraded() {
            return;
        }
        for policy in decision.policies() {
            let Some(wait) = policy.retry_after() else {
                continue;
            };
            let key = policy.key();
            let until = asked_at.saturating_add(micros(wait));
            let denied = Denied {
                quota: key.policy().quota(),
                forget_at: until.min(asked_at.saturating_add(self.max_memory)),
                until,
                cost,
                remaining: policy.remaining(),
                reset_at: asked_at.saturating_add(micros(policy.reset_after())),
            };
            self.shard(key)
                .insert(key.hash128(), denied, asked_at, self.max_per_shard);
        }
    }

    fn forget(&self, keys: &[PolicyKey]) {
        for key in keys {
            self.shard(key).denied.remove(&key.hash128());
        }
    }
}

impl Shard {
    /// Remembers `denied` for `key`, making room from ended denials if the shard is full.
    fn insert(&mut self, key: u128, denied: Denied, now: u64, max: usize) {
        if self.denied.len() >= max && !self.denied.contains_key(&key) {
            if now < self.soonest {
                return;
            }
            self.denied.retain(|_, d| d.forget_at > now);
            self.soonest = self
                .denied
                .values()
                .map(|d| d.forget_at)
                .min()
                .unwrap_or(u64::MAX);
            if self.denied.len() >= max {
                return;
            }
        }
        if self.denied.is_empty() {
            self.soonest = u64::MAX;
        }
        self.soonest = self.soonest.min(denied.forget_at);
        self.denied.insert(key, denied);
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A shard holds plain values updated in one step each: a panic elsewhere leaves it whole.
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<L: RateLimiter, C: Clock> RateLimiter for DenialCache<L, C> {
    async fn check<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
        if let Some(denied) = self.remembered_denial(keys, cost)? {
            return Ok(denied);
        }
        let asked_at = self.clock.now().as_micros();
        let decision = self.inner.check(keys, cost).await?;
        self.remember(&decision, cost, asked_at);
        Ok(decision)
    }

    fn peek<'k>(
        &self,
        keys: &'k [PolicyKey],
        cost: u64,
    ) -> impl Future<Output = Result<Decision<'k>, Error>> + Send {
        self.inner.peek(keys, cost)
    }

    async fn refund(&self, keys: &[PolicyKey], cost: u64) -> Result<(), Error> {
        self.forget(keys);
        self.inner.refund(keys, cost).await
    }

    async fn reset(&self, keys: &[PolicyKey]) -> Result<(), Error> {
        self.forget(keys);
        self.inner.reset(keys).await
    }
}

#[cfg(feature = "memory")]
impl<C: Clock, C2: Clock> DenialCache<crate::MemoryLimiter<C2>, C> {
    /// [`check`](RateLimiter::check) without a runtime, over the memory backend (for tests and
    /// examples: the memory backend never waits).
    pub fn check_now<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
        if let Some(denied) = self.remembered_denial(keys, cost)? {
            return Ok(denied);
        }
        let asked_at = self.clock.now().as_micros();
        let decision = self.inner.check_now(keys, cost)?;
        self.remember(&decision, cost, asked_at);
        Ok(decision)
    }
}

#[cfg(all(test, feature = "memory"))]
mod tests;
