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
