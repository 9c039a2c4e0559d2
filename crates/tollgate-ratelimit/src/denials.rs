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
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use proptest::prelude::*;

    use super::*;
    use crate::clock::{ManualClock, Timestamp};
    use crate::{Algorithm, MemoryLimiter, Policy, Scope};

    /// The memory backend, counting the decisions it is asked for.
    #[derive(Debug)]
    struct Counted {
        inner: MemoryLimiter<ManualClock>,
        checks: AtomicU64,
    }

    impl RateLimiter for Counted {
        async fn check<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
            self.checks.fetch_add(1, Ordering::Relaxed);
            self.inner.check_now(keys, cost)
        }

        async fn peek<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
            self.inner.peek(keys, cost).await
        }

        async fn refund(&self, keys: &[PolicyKey], cost: u64) -> Result<(), Error> {
            self.inner.refund(keys, cost).await
        }

        async fn reset(&self, keys: &[PolicyKey]) -> Result<(), Error> {
            self.inner.reset(keys).await
        }
    }

    /// A denial remembered under one policy's terms is not an answer under new ones: a higher
    /// limit for the same key (a reloaded table, another tier) is decided by the backend.
    #[test]
    fn a_re_limited_policy_is_decided_again() {
        let clock = clock();
        let limiter = cached(&clock, 100);
        let per_user = |limit| {
            let window = Algorithm::sliding_window(limit, Duration::from_secs(60));
            Arc::new(Policy::new("per-user", Scope::User, window).expect("valid"))
        };
        let one = [PolicyKey::new(per_user(1), "alice")];
        assert!(run(limiter.check(&one, 1)).expect("decided").is_allowed());
        assert!(!run(limiter.check(&one, 1)).expect("decided").is_allowed());
        assert!(
            !run(limiter.check(&one, 1))
                .expect("remembered")
                .is_allowed()
        );
        assert_eq!(limiter.answered(), 1);
        let two = [PolicyKey::new(per_user(2), "alice")];
        assert!(run(limiter.check(&two, 1)).expect("decided").is_allowed());
        assert_eq!(limiter.answered(), 1, "the backend decided");
    }

    /// Under `max_memory` a long denial is answered from memory only that long, reporting
    /// its real wait, then the backend decides again: a reset made elsewhere is seen by then.
    #[test]
    fn max_memory_bounds_how_long_a_denial_is_answered_from_memory() {
        let clock = clock();
        let inner = MemoryLimiter::builder().clock(clock.clone()).build();
        let counted = Counted {
            inner,
            checks: AtomicU64::new(0),
        };
        let limiter = DenialCache::builder(counted)
            .clock(clock.clone())
            .max_memory(Duration::from_secs(1))
            .build();
        let hourly = Algorithm::sliding_window(1, Duration::from_secs(3_600));
        let keys = [PolicyKey::new(policy("p", hourly), "alice")];
        assert!(run(limiter.check(&keys, 1)).expect("decided").is_allowed());
        assert!(!run(limiter.check(&keys, 1)).expect("decided").is_allowed());
        let remembered = run(limiter.check(&keys, 1)).expect("remembered");
        let wait = remembered.retry_after().expect("a wait");
        assert!(wait > Duration::from_secs(3_000), "the real wait: {wait:?}");
        assert_eq!((limiter.answered(), checks(&limiter)), (1, 2));
        // A reset through another process, then a second later this one asks again.
        run(limiter.inner().inner.reset(&keys)).expect("reset");
        clock.advance(Duration::from_secs(1));
        assert!(run(limiter.check(&keys, 1)).expect("decided").is_allowed());
        assert_eq!(checks(&limiter), 3);
    }

    fn clock() -> ManualClock {
        ManualClock::starting_at(Timestamp::from_secs(1_700_000_000))
    }

    fn cached(clock: &ManualClock, max: usize) -> DenialCache<Counted, ManualClock> {
        let inner = MemoryLimiter::builder().clock(clock.clone()).build();
        let counted = Counted {
            inner,
            checks: AtomicU64::new(0),
        };
        DenialCache::builder(counted)
            .clock(clock.clone())
            .max_entries(max)
            .build()
    }

    fn policy(name: &str, algorithm: Algorithm) -> Arc<Policy> {
        Arc::new(Policy::new(name, Scope::User, algorithm).expect("valid"))
    }

    fn run<T>(future: impl Future<Output = T>) -> T {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => panic!("the memory backend never waits"),
        }
    }

    fn checks(limiter: &DenialCache<Counted, ManualClock>) -> u64 {
        limiter.inner().checks.load(Ordering::Relaxed)
    }

    #[test]
    fn a_remembered_denial_is_answered_without_the_backend_until_its_wait_ends() {
        let clock = clock();
        let limiter = cached(&clock, 100);
        let window = Algorithm::sliding_window(2, Duration::from_secs(10));
        let keys = [PolicyKey::new(policy("p", window), "alice")];
        for _ in 0..2 {
            assert!(run(limiter.check(&keys, 1)).expect("valid").is_allowed());
        }
        let first = run(limiter.check(&keys, 1)).expect("valid");
        assert!(!first.is_allowed());
        let asked = checks(&limiter);
        clock.advance(Duration::from_secs(1));
        let again = run(limiter.check(&keys, 1)).expect("valid");
        assert_eq!(checks(&limiter), asked, "answered from memory");
        assert_eq!(limiter.answered(), 1);
        assert!(!again.is_allowed());
        let binding = again.binding().expect("the denied policy");
        assert_eq!(binding.policy().name(), "p");
        assert_eq!(binding.remaining(), 0);
        let left = first.retry_after().expect("a wait") - Duration::from_secs(1);
        assert_eq!(again.retry_after(), Some(left));
        clock.advance(left);
        assert!(run(limiter.check(&keys, 1)).expect("valid").is_allowed());
        assert_eq!(
            checks(&limiter),
            asked + 1,
            "the backend again once the wait ended"
        );
    }

    #[test]
    fn a_smaller_cost_a_refund_and_a_peek_ask_the_backend() {
        let clock = clock();
        let limiter = cached(&clock, 100);
        let bucket = Algorithm::token_bucket(1, Duration::from_secs(1), 4);
        let keys = [PolicyKey::new(policy("b", bucket), "bob")];
        assert!(run(limiter.check(&keys, 3)).expect("valid").is_allowed());
        assert!(!run(limiter.check(&keys, 4)).expect("valid").is_allowed());
        let asked = checks(&limiter);
        assert!(run(limiter.check(&keys, 1)).expect("valid").is_allowed());
        assert_eq!(checks(&limiter), asked + 1, "cost 1 was never denied");
        assert!(!run(limiter.peek(&keys, 4)).expect("valid").is_allowed());
        run(limiter.refund(&keys, 1)).expect("refunded");
        assert_eq!(limiter.remembered(), 0, "a refund forgets the key");
    }

    #[test]
    fn a_reset_forgets_the_remembered_denial_and_the_use() {
        let clock = clock();
        let limiter = cached(&clock, 100);
        let window = Algorithm::sliding_window(1, Duration::from_secs(60));
        let keys = [PolicyKey::new(policy("r", window), "gina")];
        assert!(run(limiter.check(&keys, 1)).expect("valid").is_allowed());
        assert!(!run(limiter.check(&keys, 1)).expect("valid").is_allowed());
        assert_eq!(limiter.remembered(), 1);
        run(limiter.reset(&keys)).expect("reset");
        assert_eq!(limiter.remembered(), 0, "the denial is forgotten");
        assert!(
            run(limiter.check(&keys, 1)).expect("valid").is_allowed(),
            "the whole quota is back"
        );
    }

    #[test]
    fn requests_the_backend_would_refuse_are_refused_alike() {
        let clock = clock();
        let limiter = cached(&clock, 100);
        let bucket = Algorithm::token_bucket(1, Duration::from_secs(1), 2);
        let key = PolicyKey::new(policy("b", bucket), "carol");
        let keys = [key.clone()];
        assert!(run(limiter.check(&keys, 2)).expect("valid").is_allowed());
        assert!(!run(limiter.check(&keys, 1)).expect("valid").is_allowed());
        assert!(
            run(limiter.check(&[key.clone(), key], 1)).is_err(),
            "a repeated key"
        );
        assert!(run(limiter.check(&keys, 3)).is_err(), "over the capacity");
    }

    /// The memory backend, whose answers take `travel` to come back (the clock moves after it
    /// decided, as over a network).
    #[derive(Debug)]
    struct Distant {
        inner: MemoryLimiter<ManualClock>,
        clock: ManualClock,
        travel: Duration,
    }

    impl RateLimiter for Distant {
        async fn check<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
            let decision = self.inner.check_now(keys, cost);
            self.clock.advance(self.travel);
            decision
        }

        async fn peek<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
            self.inner.peek(keys, cost).await
        }

        async fn refund(&self, keys: &[PolicyKey], cost: u64) -> Result<(), Error> {
            self.inner.refund(keys, cost).await
        }

        async fn reset(&self, keys: &[PolicyKey]) -> Result<(), Error> {
            self.inner.reset(keys).await
        }
    }

    #[test]
    fn a_remembered_denial_never_outlasts_the_real_one_however_long_the_answer_travels() {
        let clock = clock();
        let travel = Duration::from_millis(5);
        let inner = MemoryLimiter::builder().clock(clock.clone()).build();
        let distant = Distant {
            inner,
            clock: clock.clone(),
            travel,
        };
        let limiter = DenialCache::builder(distant).clock(clock.clone()).build();
        let bucket = Algorithm::token_bucket(1, Duration::from_secs(1), 1);
        let keys = [PolicyKey::new(policy("b", bucket), "dave")];
        assert!(run(limiter.check(&keys, 1)).expect("valid").is_allowed());
        let denied = run(limiter.check(&keys, 1)).expect("valid");
        // Decided one travel after the first admission: the bucket is full again a second
        // after that admission, two travels before the answer got back plus the wait.
        let wait = denied.retry_after().expect("a wait");
        assert_eq!(wait, Duration::from_secs(1) - travel);
        clock.advance(wait - travel + Duration::from_micros(1));
        assert!(
            run(limiter.check(&keys, 1)).expect("valid").is_allowed(),
            "the backend admits again as soon as the real wait is over"
        );
    }

    #[test]
    fn memory_is_bounded_and_ended_denials_make_room() {
        let clock = clock();
        let limiter = cached(&clock, SHARDS);
        let window = Algorithm::sliding_window(1, Duration::from_secs(10));
        let p = policy("w", window);
        let keys: Vec<[PolicyKey; 1]> = (0..200)
            .map(|i| [PolicyKey::new(Arc::clone(&p), &format!("user-{i}"))])
            .collect();
        for key in &keys {
            run(limiter.check(key, 1)).expect("valid");
            assert!(!run(limiter.check(key, 1)).expect("valid").is_allowed());
        }
        assert!(limiter.remembered() <= SHARDS, "{}", limiter.remembered());
        clock.advance(Duration::from_secs(20));
        for key in &keys {
            run(limiter.check(key, 1)).expect("valid");
            run(limiter.check(key, 1)).expect("valid");
        }
        assert!(limiter.remembered() <= SHARDS);
        assert!(
            limiter.remembered() > 0,
            "ended denials gave their room to new ones"
        );
    }

    #[derive(Clone, Debug)]
    enum Op {
        Check { keys: Vec<usize>, cost: u64 },
        Refund { key: usize },
        Advance { ms: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (proptest::collection::btree_set(0..6usize, 1..4), 1..3u64)
                .prop_map(|(keys, cost)| Op::Check { keys: keys.into_iter().collect(), cost }),
            1 => (0..6usize).prop_map(|key| Op::Refund { key }),
            2 => (1..1_500u64).prop_map(|ms| Op::Advance { ms }),
        ]
    }

    proptest! {
        /// Every algorithm, single and multi-key requests, refunds: the cache admits exactly
        /// what the backend alone admits (so it never lets through what the backend would
        /// refuse, and never refuses what it would admit).
        #[test]
        fn the_cache_decides_as_the_backend_alone(ops in proptest::collection::vec(op(), 1..120)) {
            let clock = clock();
            let cached = cached(&clock, 1_000);
            let alone = MemoryLimiter::builder().clock(clock.clone()).build();
            let second = Duration::from_secs(1);
            let policies = [
                policy("window", Algorithm::sliding_window(3, second)),
                policy("log", Algorithm::sliding_log(2, second)),
                policy("bucket", Algorithm::token_bucket(2, second, 3)),
            ];
            let all: Vec<PolicyKey> = (0..6)
                .map(|i| PolicyKey::new(Arc::clone(&policies[i % 3]), &format!("u{}", i / 3)))
                .collect();
            for op in ops {
                match op {
                    Op::Check { keys, cost } => {
                        let keys: Vec<PolicyKey> = keys.iter().map(|&i| all[i].clone()).collect();
                        let ours = run(cached.check(&keys, cost)).map(|d| d.is_allowed());
                        let theirs = alone.check_now(&keys, cost).map(|d| d.is_allowed());
                        prop_assert_eq!(ours.ok(), theirs.ok());
                    }
                    Op::Refund { key } => {
                        let keys = [all[key].clone()];
                        run(cached.refund(&keys, 1)).expect("refunded");
                        run(alone.refund(&keys, 1)).expect("refunded");
                    }
                    Op::Advance { ms } => clock.advance(Duration::from_millis(ms)),
                }
            }
        }
    }
}
