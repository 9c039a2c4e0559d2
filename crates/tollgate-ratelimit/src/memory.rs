//! The in-process backend: sharded, bounded, with idle keys forgotten automatically.
//!
//! Keys are spread over many mutex-guarded shards (a multiple of the core count, each on its own
//! cache line) so that unrelated keys rarely contend. A decision over several keys locks their
//! shards in index order (no deadlock), decides every key, and commits only if all admit.
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

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};

use crate::algorithm::{State, Status};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::decision::{Decision, PolicyDecision};
use crate::policy::{PolicyKey, Quota};
use crate::{Error, RateLimiter, validate};

/// Default bound on tracked keys: 2^20, at most about 120 MiB (see `docs/performance.md`).
pub const DEFAULT_MAX_KEYS: usize = 1 << 20;

/// Shards smaller than this are not swept (a sweep would cost more than the keys it frees).
const MIN_SWEEP_INTERVAL: usize = 64;

/// How many keys are looked at to choose one to evict from a full shard.
const EVICTION_SAMPLE: usize = 8;

/// Tables are indexed by [`PolicyKey`]'s precomputed 128-bit hash, so the table's own hasher only
/// passes the low 64 bits through.
type KeyMap<V> = HashMap<u128, V, BuildHasherDefault<PreHashed>>;

#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if a key type other than u128 is ever used; still a valid hash.
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

/// A key's state and the instant from which it is indistinguishable from a fresh one.
#[derive(Debug)]
struct Entry {
    state: State,
    idle_at: u64,
}

#[derive(Debug)]
struct ShardMap {
    entries: KeyMap<Entry>,
    inserts_since_sweep: usize,
    /// Insertions between sweeps: the size left by the last sweep, so a sweep's cost is paid for
    /// by as many insertions.
    sweep_after: usize,
}

/// One lock and its map, on a cache line of its own so neighbouring locks do not false-share.
#[derive(Debug)]
#[repr(align(128))]
struct Shard(Mutex<ShardMap>);

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
            .map(|_| {
                Shard(Mutex::new(ShardMap {
                    entries: KeyMap::default(),
                    inserts_since_sweep: 0,
                    sweep_after: MIN_SWEEP_INTERVAL,
                }))
            })
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

/// The bounds a shard enforces when it inserts.
#[derive(Clone, Copy, Debug)]
struct Limits {
    max_keys_per_shard: usize,
    /// µs a key must have been idle before a sweep forgets it (hot keys that touch "idle"
    /// between requests, such as a barely used token bucket, would otherwise churn).
    idle_grace: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Check,
    Peek,
}

impl ShardMap {
    /// Brings the key's state to `now` and asks whether it admits `cost`.
    fn admits(&mut self, key: u128, quota: Quota, now: u64, cost: u64) -> Result<(), u64> {
        match self.entries.get_mut(&key) {
            Some(entry) if entry.state.matches(quota) => {
                entry.state.advance(quota, now);
                entry.state.admits(quota, now, cost)
            }
            _ => State::fresh(quota, now).admits(quota, now, cost),
        }
    }

    /// The whole decision for a single key, with one table lookup.
    fn decide_one(
        &mut self,
        key: u128,
        quota: Quota,
        now: u64,
        cost: u64,
        mode: Mode,
        limits: Limits,
    ) -> (Result<(), u64>, Status, u64) {
        let consume = mode == Mode::Check;
        if let Some(entry) = self.entries.get_mut(&key) {
            let (verdict, status) = entry.state.decide(quota, now, cost, consume);
            if consume && verdict.is_ok() {
                entry.idle_at = entry.state.idle_at(quota);
            }
            return (verdict, status, 0);
        }
        let mut state = State::fresh(quota, now);
        let (verdict, status) = state.decide(quota, now, cost, consume);
        if !consume || verdict.is_err() {
            return (verdict, status, 0);
        }
        let evicted = self.insert(key, state, quota, now, limits);
        (verdict, status, evicted)
    }

    fn status(&self, key: u128, quota: Quota, now: u64) -> Status {
        match self.entries.get(&key) {
            Some(entry) => entry.state.status(quota, now),
            None => State::fresh(quota, now).status(quota, now),
        }
    }

    fn consume(&mut self, key: u128, quota: Quota, now: u64, cost: u64, limits: Limits) -> u64 {
        if let Some(entry) = self.entries.get_mut(&key) {
            if !entry.state.matches(quota) {
                entry.state = State::fresh(quota, now);
            }
            entry.state.consume(quota, now, cost);
            entry.idle_at = entry.state.idle_at(quota);
            return 0;
        }
        let mut state = State::fresh(quota, now);
        state.consume(quota, now, cost);
        self.insert(key, state, quota, now, limits)
    }

    /// Inserts a new key after making room; returns how many live keys had to go.
    fn insert(&mut self, key: u128, state: State, quota: Quota, now: u64, limits: Limits) -> u64 {
        let evicted = self.make_room(now, limits);
        let idle_at = state.idle_at(quota);
        self.entries.insert(key, Entry { state, idle_at });
        evicted
    }

    /// Sweeps keys idle for at least the grace period every `len` insertions, and evicts down to
    /// the bound; returns how many live keys had to go.
    fn make_room(&mut self, now: u64, limits: Limits) -> u64 {
        self.inserts_since_sweep += 1;
        if self.inserts_since_sweep >= self.sweep_after {
            let forget_before = now.saturating_sub(limits.idle_grace);
            self.entries
                .retain(|_, entry| entry.idle_at > forget_before);
            self.inserts_since_sweep = 0;
            self.sweep_after = self.entries.len().max(MIN_SWEEP_INTERVAL);
        }
        let mut live_evicted = 0;
        while self.entries.len() >= limits.max_keys_per_shard {
            let victim = self
                .entries
                .iter()
                .take(EVICTION_SAMPLE)
                .min_by_key(|(_, entry)| entry.idle_at)
                .map(|(&key, entry)| (key, entry.idle_at));
            let Some((victim, idle_at)) = victim else {
                break;
            };
            self.entries.remove(&victim);
            if idle_at > now {
                live_evicted += 1;
            }
        }
        live_evicted
    }
}

impl<C: Clock> MemoryLimiter<C> {
    fn shard_index(&self, key: &PolicyKey) -> usize {
        // The high half picks the shard; the low half indexes the shard's table.
        (key.hash128() >> 64) as usize & (self.inner.shards.len() - 1)
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, ShardMap> {
        self.inner.shards[index].0.lock()
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
            let mut shard = self.lock(self.shard_index(key));
            if let Some(entry) = shard.entries.get_mut(&key.hash128()) {
                let quota = key.policy().quota();
                entry.state.refund(quota, now, cost);
                entry.idle_at = entry.state.idle_at(quota);
            }
        }
        Ok(())
    }

    /// Keys currently tracked (locks every shard in turn; for metrics, not the hot path).
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.0.lock().entries.len())
            .sum()
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
            // The common case: one shard, one lookup.
            let (verdict, status, evicted) = self.lock(self.shard_index(key)).decide_one(
                key.hash128(),
                key.policy().quota(),
                now.as_micros(),
                cost,
                mode,
                self.inner.limits,
            );
            self.count_evictions(evicted);
            return Ok(Decision::single(now, policy_decision(key, verdict, status)));
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
        let mut guards: Vec<MutexGuard<'_, ShardMap>> =
            order.iter().map(|&i| self.lock(i)).collect();
        let (decision, evicted) = self.decide_locked(keys, &mut guards, &slots, cost, now, mode);
        drop(guards);
        self.count_evictions(evicted);
        Ok(decision)
    }

    /// Decides every key, commits if all admit (and this is a check), and reports; `slots[i]` is
    /// the index in `guards` of key `i`'s shard. Returns the decision and the live evictions.
    fn decide_locked<'k>(
        &self,
        keys: &'k [PolicyKey],
        guards: &mut [MutexGuard<'_, ShardMap>],
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

fn policy_decision(
    key: &PolicyKey,
    verdict: Result<(), u64>,
    status: Status,
) -> PolicyDecision<'_> {
    PolicyDecision::from_micros(key, status.remaining, status.reset_after, verdict.err())
}

impl<C: Clock> RateLimiter for MemoryLimiter<C> {
    async fn check<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
        self.check_now(keys, cost)
    }

    async fn peek<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
        self.peek_now(keys, cost)
    }

    async fn refund(&self, keys: &[PolicyKey], cost: u64) -> Result<(), Error> {
        self.refund_now(keys, cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::{Algorithm, Policy, Scope};

    fn key(name: &str, algorithm: Algorithm, subject: &str) -> PolicyKey {
        let policy = Policy::new(name, Scope::User, algorithm).expect("valid");
        PolicyKey::new(Arc::new(policy), subject)
    }

    #[test]
    fn idle_keys_are_swept_without_a_thread() {
        let clock = ManualClock::starting_at(Timestamp::from_secs(100));
        let limiter = MemoryLimiter::builder()
            .clock(clock.clone())
            .shards(1)
            .idle_grace(Duration::from_secs(1))
            .build();
        let alg = Algorithm::sliding_window(5, Duration::from_secs(1));
        for i in 0..1000 {
            limiter
                .check_now(&[key("p", alg, &i.to_string())], 1)
                .expect("ok");
        }
        assert_eq!(limiter.len(), 1000);
        clock.advance(Duration::from_secs(3));
        for i in 0..1000 {
            limiter
                .check_now(&[key("q", alg, &i.to_string())], 1)
                .expect("ok");
        }
        // The first thousand became idle and were swept while the second thousand went in.
        assert!(limiter.len() < 1500, "len = {}", limiter.len());
        assert_eq!(limiter.live_evictions(), 0);
    }

    #[test]
    fn key_bound_is_enforced_and_live_evictions_counted() {
        let clock = ManualClock::starting_at(Timestamp::from_secs(100));
        let limiter = MemoryLimiter::builder()
            .clock(clock)
            .shards(4)
            .max_keys(100)
            .build();
        let alg = Algorithm::sliding_window(5, Duration::from_secs(60));
        for i in 0..1000 {
            limiter
                .check_now(&[key("p", alg, &i.to_string())], 1)
                .expect("ok");
        }
        assert!(limiter.len() <= 100, "len = {}", limiter.len());
        assert!(limiter.live_evictions() >= 900);
    }

    #[test]
    fn multi_key_decisions_commit_all_or_nothing() {
        let clock = ManualClock::starting_at(Timestamp::from_secs(100));
        let limiter = MemoryLimiter::builder().clock(clock).shards(2).build();
        let small = key(
            "small",
            Algorithm::sliding_log(1, Duration::from_secs(10)),
            "a",
        );
        let big = key(
            "big",
            Algorithm::sliding_log(10, Duration::from_secs(10)),
            "a",
        );
        let both = [big.clone(), small.clone()];
        assert!(limiter.check_now(&both, 1).expect("ok").is_allowed());
        let denied = limiter.check_now(&both, 1).expect("ok");
        assert!(!denied.is_allowed());
        assert_eq!(denied.binding().map(|b| b.policy().name()), Some("small"));
        // The denial took nothing from `big`.
        assert_eq!(
            limiter.peek_now(&[big], 1).expect("ok").policies()[0].remaining(),
            9
        );
        assert!(matches!(
            limiter.check_now(&[small.clone(), small], 1),
            Err(Error::DuplicateKey(_))
        ));
    }
}
