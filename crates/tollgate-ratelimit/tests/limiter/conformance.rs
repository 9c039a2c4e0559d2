//! One suite, every backend: the same literal expectations for memory and Redis.
//!
//! Each scenario takes a limiter and the manual clock it decides on. The macro at the bottom
//! instantiates every scenario once per backend.

use std::sync::Arc;
use std::time::Duration;

use tollgate_ratelimit::clock::ManualClock;
use tollgate_ratelimit::{Algorithm, DynRateLimiter, Error, Policy, PolicyKey, RateLimiter, Scope};

use crate::support::ms;

fn key(name: &str, algorithm: Algorithm, subject: &str) -> PolicyKey {
    let policy = Policy::new(name, Scope::User, algorithm).expect("valid policy");
    PolicyKey::new(Arc::new(policy), subject)
}

/// `(allowed, remaining, reset_after ms, retry_after ms)` of the only policy of a decision.
async fn check(
    limiter: &dyn DynRateLimiter,
    keys: &[PolicyKey],
    cost: u64,
) -> (bool, u64, u64, Option<u64>) {
    let decision = limiter.check(keys, cost).await.expect("backend answers");
    let p = decision.binding().expect("one policy");
    let as_ms = |d: Duration| u64::try_from(d.as_millis()).expect("small");
    (
        decision.is_allowed(),
        p.remaining(),
        as_ms(p.reset_after()),
        p.retry_after().map(as_ms),
    )
}

async fn remaining(limiter: &dyn DynRateLimiter, key: &PolicyKey) -> u64 {
    let decision = limiter
        .peek(std::slice::from_ref(key), 1)
        .await
        .expect("backend answers");
    decision.policies()[0].remaining()
}

pub(crate) async fn sliding_window_counts_and_decays(
    limiter: &dyn DynRateLimiter,
    clock: &ManualClock,
) {
    let k = [key(
        "sw",
        Algorithm::sliding_window(5, Duration::from_secs(10)),
        "alice",
    )];
    for left in (0..5).rev() {
        assert_eq!(check(limiter, &k, 1).await, (true, left, 20_000, None));
    }
    // Full: wait for the next window, then for a fifth of the old count to decay (12 s).
    assert_eq!(
        check(limiter, &k, 1).await,
        (false, 0, 20_000, Some(12_000))
    );
    clock.advance(ms(11_999));
    assert!(!check(limiter, &k, 1).await.0);
    clock.advance(ms(1));
    // 5 × 0.8 + 1 = 5: admitted, nothing left; 8 s left in this window, then a whole one.
    assert_eq!(check(limiter, &k, 1).await, (true, 0, 18_000, None));
    // Half-way through: 5 × 0.5 + 1 = 3.5 → one more fits.
    clock.advance(ms(3_000));
    assert_eq!(check(limiter, &k, 1).await, (true, 0, 15_000, None));
    // Two idle windows later everything is back.
    clock.advance(ms(20_000));
    assert_eq!(remaining(limiter, &k[0]).await, 5);
}

pub(crate) async fn sliding_log_is_exact(limiter: &dyn DynRateLimiter, clock: &ManualClock) {
    let k = [key(
        "log",
        Algorithm::sliding_log(3, Duration::from_secs(1)),
        "alice",
    )];
    assert_eq!(check(limiter, &k, 1).await, (true, 2, 1_000, None));
    clock.advance(ms(100));
    assert_eq!(check(limiter, &k, 1).await, (true, 1, 1_000, None));
    clock.advance(ms(100));
    assert_eq!(check(limiter, &k, 1).await, (true, 0, 1_000, None));
    clock.advance(ms(100));
    // The oldest entry leaves the window at 1 000 ms: 700 ms from now.
    assert_eq!(check(limiter, &k, 1).await, (false, 0, 900, Some(700)));
    // A cost of 2 needs the two oldest gone.
    assert_eq!(check(limiter, &k, 2).await, (false, 0, 900, Some(800)));
    clock.advance(ms(700));
    assert_eq!(check(limiter, &k, 1).await, (true, 0, 1_000, None));
}

pub(crate) async fn token_bucket_bursts_then_refills(
    limiter: &dyn DynRateLimiter,
    clock: &ManualClock,
) {
    // 2 per second (T = 500 ms), burst 3 (τ = 1.5 s).
    let k = [key(
        "tb",
        Algorithm::token_bucket(2, Duration::from_secs(1), 3),
        "alice",
    )];
    assert_eq!(check(limiter, &k, 1).await, (true, 2, 500, None));
    assert_eq!(check(limiter, &k, 2).await, (true, 0, 1_500, None));
    assert_eq!(check(limiter, &k, 1).await, (false, 0, 1_500, Some(500)));
    assert_eq!(check(limiter, &k, 3).await, (false, 0, 1_500, Some(1_500)));
    clock.advance(ms(499));
    assert_eq!(check(limiter, &k, 1).await, (false, 0, 1_001, Some(1)));
    clock.advance(ms(1));
    assert_eq!(check(limiter, &k, 1).await, (true, 0, 1_500, None));
    clock.advance(ms(10_000));
    assert_eq!(remaining(limiter, &k[0]).await, 3);
}

pub(crate) async fn denied_request_consumes_nothing(
    limiter: &dyn DynRateLimiter,
    _clock: &ManualClock,
) {
    let wide = key(
        "wide",
        Algorithm::sliding_window(10, Duration::from_secs(60)),
        "alice",
    );
    let narrow = key(
        "narrow",
        Algorithm::token_bucket(1, Duration::from_secs(60), 1),
        "alice",
    );
    let log = key(
        "log",
        Algorithm::sliding_log(10, Duration::from_secs(60)),
        "alice",
    );
    let all = [wide.clone(), narrow.clone(), log.clone()];
    let first = limiter.check(&all, 1).await.expect("answers");
    assert!(first.is_allowed());
    // Binding when admitted: the fewest remaining (the token bucket, now empty).
    assert_eq!(first.binding().map(|b| b.policy().name()), Some("narrow"));
    for _ in 0..3 {
        let denied = limiter.check(&all, 1).await.expect("answers");
        assert!(!denied.is_allowed());
        assert_eq!(denied.binding().map(|b| b.policy().name()), Some("narrow"));
        assert_eq!(denied.retry_after(), Some(Duration::from_secs(60)));
        let verdicts: Vec<bool> = denied.policies().iter().map(|p| p.is_allowed()).collect();
        assert_eq!(verdicts, [true, false, true]);
    }
    assert_eq!(remaining(limiter, &wide).await, 9);
    assert_eq!(remaining(limiter, &log).await, 9);
}

pub(crate) async fn peek_and_refund(limiter: &dyn DynRateLimiter, _clock: &ManualClock) {
    for (name, algorithm) in [
        ("w", Algorithm::sliding_window(4, Duration::from_secs(60))),
        ("l", Algorithm::sliding_log(4, Duration::from_secs(60))),
        ("g", Algorithm::token_bucket(4, Duration::from_secs(60), 4)),
    ] {
        let k = [key(name, algorithm, "bob")];
        let peeked = limiter.peek(&k, 4).await.expect("answers");
        assert!(peeked.is_allowed(), "{name}");
        assert_eq!(
            peeked.policies()[0].remaining(),
            4,
            "{name}: peek consumes nothing"
        );
        assert_eq!(check(limiter, &k, 3).await.1, 1, "{name}");
        let peeked = limiter.peek(&k, 2).await.expect("answers");
        assert!(!peeked.is_allowed(), "{name}: peek reports the denial");
        assert_eq!(peeked.policies()[0].remaining(), 1, "{name}");
        limiter.refund(&k, 2).await.expect("answers");
        assert_eq!(remaining(limiter, &k[0]).await, 3, "{name}");
        // A refund never gives back more than was taken.
        limiter.refund(&k, 4).await.expect("answers");
        assert_eq!(remaining(limiter, &k[0]).await, 4, "{name}");
    }
}

pub(crate) async fn zero_cost_checks_consume_nothing(
    limiter: &dyn DynRateLimiter,
    _clock: &ManualClock,
) {
    let k = [key(
        "log",
        Algorithm::sliding_log(2, Duration::from_secs(60)),
        "z",
    )];
    for _ in 0..100 {
        assert!(limiter.check(&k, 0).await.expect("answers").is_allowed());
    }
    assert_eq!(check(limiter, &k, 2).await, (true, 0, 60_000, None));
    assert!(limiter.check(&k, 0).await.expect("answers").is_allowed());
    limiter.refund(&k, 0).await.expect("answers");
    assert_eq!(remaining(limiter, &k[0]).await, 0);
}

pub(crate) async fn subjects_are_independent(limiter: &dyn DynRateLimiter, _clock: &ManualClock) {
    let alg = Algorithm::sliding_window(1, Duration::from_secs(60));
    let alice = [key("user", alg, "alice")];
    let bob = [key("user", alg, "bob")];
    let braces = [key("user", alg, "{alice}")];
    assert!(
        limiter
            .check(&alice, 1)
            .await
            .expect("answers")
            .is_allowed()
    );
    assert!(
        !limiter
            .check(&alice, 1)
            .await
            .expect("answers")
            .is_allowed()
    );
    assert!(limiter.check(&bob, 1).await.expect("answers").is_allowed());
    assert!(
        limiter
            .check(&braces, 1)
            .await
            .expect("answers")
            .is_allowed()
    );
}

pub(crate) async fn impossible_costs_are_errors(
    limiter: &dyn DynRateLimiter,
    _clock: &ManualClock,
) {
    let k = [key(
        "tb",
        Algorithm::token_bucket(1, Duration::from_secs(1), 3),
        "alice",
    )];
    let err = limiter.check(&k, 4).await.expect_err("4 > burst 3");
    assert!(
        matches!(
            err,
            Error::InsufficientCapacity {
                cost: 4,
                capacity: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_transient());
    let twice = [k[0].clone(), k[0].clone()];
    assert!(matches!(
        limiter.check(&twice, 1).await,
        Err(Error::DuplicateKey(_))
    ));
    let none = limiter.check(&[], 1).await.expect("no keys, no limit");
    assert!(none.is_allowed() && none.binding().is_none());
}

pub(crate) async fn clock_stepping_back_gives_no_extra_quota(
    limiter: &dyn DynRateLimiter,
    clock: &ManualClock,
) {
    let k = [key(
        "tb",
        Algorithm::token_bucket(1, Duration::from_secs(1), 1),
        "alice",
    )];
    clock.advance(ms(5_000));
    assert!(limiter.check(&k, 1).await.expect("answers").is_allowed());
    clock.set(crate::support::START);
    let denied = limiter.check(&k, 1).await.expect("answers");
    assert!(!denied.is_allowed());
    assert_eq!(denied.retry_after(), Some(Duration::from_secs(6)));
}

/// A replaced policy table: a policy that stays keeps each key's state under its new limits
/// (re-limited, or moved to another algorithm, which starts it afresh), and a removed policy
/// no longer applies.
pub(crate) async fn a_replaced_table_keeps_the_state_of_the_policies_that_stay(
    limiter: &dyn DynRateLimiter,
    _clock: &ManualClock,
) {
    use tollgate_ratelimit::{LivePolicies, PolicySet, RequestContext};
    let window = |limit| Algorithm::sliding_window(limit, Duration::from_secs(60));
    let policy = |name: &str, algorithm| Policy::new(name, Scope::User, algorithm).expect("valid");
    let live = LivePolicies::new(
        PolicySet::new([policy("stays", window(2)), policy("goes", window(1))]).expect("set"),
    );
    let ctx = RequestContext::new().user("carol");
    let decide = |live: &LivePolicies| {
        let keys = live.keys_for(&ctx);
        async move {
            let decision = limiter.check(&keys, 1).await.expect("backend answers");
            (decision.is_allowed(), keys.len())
        }
    };
    assert_eq!(decide(&live).await, (true, 2));
    assert_eq!(decide(&live).await, (false, 2), "`goes` allows one");
    live.replace(PolicySet::new([policy("stays", window(3))]).expect("set"));
    assert_eq!(decide(&live).await, (true, 1));
    assert_eq!(decide(&live).await, (true, 1));
    assert_eq!(
        decide(&live).await,
        (false, 1),
        "the first request still counts: three in all"
    );
    let bucket = Algorithm::token_bucket(1, Duration::from_secs(60), 1);
    live.replace(PolicySet::new([policy("stays", bucket)]).expect("set"));
    assert_eq!(
        decide(&live).await,
        (true, 1),
        "another algorithm starts afresh"
    );
    assert_eq!(decide(&live).await, (false, 1));
}

/// A reset gives a subject its whole quota back at once, under every algorithm, and leaves
/// other subjects as they were.
pub(crate) async fn a_reset_gives_the_whole_quota_back(
    limiter: &dyn DynRateLimiter,
    _clock: &ManualClock,
) {
    let minute = Duration::from_secs(60);
    for algorithm in [
        Algorithm::sliding_window(2, minute),
        Algorithm::sliding_log(2, minute),
        Algorithm::token_bucket(2, minute, 2),
    ] {
        let erin = [key("reset", algorithm, "erin")];
        let frank = [key("reset", algorithm, "frank")];
        for keys in [&erin, &frank] {
            for _ in 0..2 {
                assert!(limiter.check(keys, 1).await.expect("answers").is_allowed());
            }
            assert!(!limiter.check(keys, 1).await.expect("answers").is_allowed());
        }
        limiter.reset(&erin).await.expect("reset");
        assert_eq!(remaining(limiter, &erin[0]).await, 2, "{algorithm:?}");
        assert_eq!(
            remaining(limiter, &frank[0]).await,
            0,
            "frank keeps his use"
        );
        // Empty again for the next algorithm.
        limiter.reset(&erin).await.expect("reset");
        limiter.reset(&frank).await.expect("reset");
    }
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let clock = tollgate_ratelimit::clock::ManualClock::starting_at(crate::support::START);
                    let limiter = crate::support::memory(&clock);
                    super::$scenario(&limiter, &clock).await;
                }
            )*
        }

        #[cfg(feature = "redis")]
        mod redis {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let name = concat!("conformance::redis::", stringify!($scenario));
                    let Some(url) = crate::support::redis_url(name) else { return };
                    let clock = tollgate_ratelimit::clock::ManualClock::starting_at(crate::support::START);
                    let limiter = crate::support::redis::limiter(&url, stringify!($scenario), &clock);
                    super::$scenario(&limiter, &clock).await;
                }
            )*
        }

        #[cfg(feature = "redis")]
        mod redis_multiplexed {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let name = concat!("conformance::redis_multiplexed::", stringify!($scenario));
                    let Some(url) = crate::support::redis_url(name) else { return };
                    let clock = tollgate_ratelimit::clock::ManualClock::starting_at(crate::support::START);
                    let limiter =
                        crate::support::redis::multiplexed_limiter(&url, stringify!($scenario), &clock).await;
                    super::$scenario(&limiter, &clock).await;
                }
            )*
        }

        #[cfg(feature = "cluster")]
        mod redis_cluster {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let name = concat!("conformance::redis_cluster::", stringify!($scenario));
                    let Some(urls) = crate::support::redis_cluster_urls(name) else { return };
                    let clock = tollgate_ratelimit::clock::ManualClock::starting_at(crate::support::START);
                    let limiter =
                        crate::support::redis::cluster_limiter(&urls, stringify!($scenario), &clock).await;
                    super::$scenario(&limiter, &clock).await;
                }
            )*
        }
    };
}

conformance!(
    sliding_window_counts_and_decays,
    sliding_log_is_exact,
    token_bucket_bursts_then_refills,
    denied_request_consumes_nothing,
    peek_and_refund,
    subjects_are_independent,
    zero_cost_checks_consume_nothing,
    impossible_costs_are_errors,
    clock_stepping_back_gives_no_extra_quota,
    a_replaced_table_keeps_the_state_of_the_policies_that_stay,
    a_reset_gives_the_whole_quota_back,
);
