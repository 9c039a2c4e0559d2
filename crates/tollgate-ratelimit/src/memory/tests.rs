use super::*;
use crate::clock::ManualClock;
use crate::{Algorithm, Policy, Scope};

fn key(name: &str, algorithm: Algorithm, subject: &str) -> PolicyKey {
    let policy = Policy::new(name, Scope::User, algorithm).expect("valid");
    PolicyKey::new(Arc::new(policy), subject)
}

/// Each table of a shard: sliding-window keys and GCRA keys (their own table).
fn one_of_each(window: Duration) -> [Algorithm; 2] {
    [
        Algorithm::sliding_window(5, window),
        Algorithm::token_bucket(5, window, 5),
    ]
}

#[test]
fn idle_keys_are_swept_without_a_thread() {
    for alg in one_of_each(Duration::from_secs(1)) {
        let clock = ManualClock::starting_at(Timestamp::from_secs(100));
        let limiter = MemoryLimiter::builder()
            .clock(clock.clone())
            .shards(1)
            .idle_grace(Duration::from_secs(1))
            .build();
        for i in 0..1000 {
            limiter
                .check_now(&[key("p", alg, &i.to_string())], 1)
                .expect("ok");
        }
        assert_eq!(limiter.len(), 1000, "{alg:?}");
        clock.advance(Duration::from_secs(3));
        for i in 0..1000 {
            limiter
                .check_now(&[key("q", alg, &i.to_string())], 1)
                .expect("ok");
        }
        // The first thousand became idle and were swept while the second thousand went in.
        assert!(limiter.len() < 1500, "{alg:?}: len = {}", limiter.len());
        assert_eq!(limiter.live_evictions(), 0, "{alg:?}");
    }
}

#[test]
fn key_bound_is_enforced_and_live_evictions_counted() {
    let [window, gcra] = one_of_each(Duration::from_secs(60));
    // One algorithm at a time, then both at once (eviction chooses across the two tables).
    for algorithms in [vec![window], vec![gcra], vec![window, gcra]] {
        let clock = ManualClock::starting_at(Timestamp::from_secs(100));
        let limiter = MemoryLimiter::builder()
            .clock(clock)
            .shards(4)
            .max_keys(100)
            .build();
        for i in 0..1000 {
            let alg = algorithms[i % algorithms.len()];
            limiter
                .check_now(&[key("p", alg, &i.to_string())], 1)
                .expect("ok");
        }
        assert!(
            limiter.len() <= 100,
            "{algorithms:?}: len = {}",
            limiter.len()
        );
        assert!(limiter.live_evictions() >= 900, "{algorithms:?}");
    }
}

/// Single-key compare-and-swaps and multi-key exclusive decisions racing on the same key,
/// on a frozen clock: the key admits exactly its 1 000, a pair denied by its second policy
/// takes nothing from the first, and the second policy counts exactly the pairs.
fn singles_and_pairs_share_one_exact_count(hourly: impl Fn(u64) -> Algorithm) {
    let clock = ManualClock::starting_at(Timestamp::from_secs(100));
    let limiter = MemoryLimiter::builder().clock(clock).shards(4).build();
    let shared = key("shared", hourly(1_000), "a");
    let pairs_only = key("pairs", hourly(100), "a");
    let both = [shared.clone(), pairs_only.clone()];
    let admitted =
        |keys: &[PolicyKey]| u64::from(limiter.check_now(keys, 1).expect("ok").is_allowed());
    let (singles, pairs) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    (0..2_000).fold((0, 0), |(singles, pairs), i| {
                        if i % 2 == 0 {
                            (singles + admitted(std::slice::from_ref(&shared)), pairs)
                        } else {
                            (singles, pairs + admitted(&both))
                        }
                    })
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("no panic"))
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    });
    assert_eq!(singles + pairs, 1_000, "{singles} singles, {pairs} pairs");
    assert!(pairs <= 100, "{pairs} pairs");
    let remaining = |k: &PolicyKey| {
        limiter
            .peek_now(std::slice::from_ref(k), 1)
            .expect("ok")
            .policies()[0]
            .remaining()
    };
    assert_eq!(remaining(&shared), 0);
    assert_eq!(remaining(&pairs_only), 100 - pairs);
}

#[test]
fn compare_and_swap_and_exclusive_decisions_share_one_exact_count() {
    singles_and_pairs_share_one_exact_count(|burst| {
        Algorithm::token_bucket(1, Duration::from_secs(3600), burst)
    });
}

/// The same on a sliding-window key, packed into its word.
#[test]
fn packed_window_keys_count_exactly_under_racing_decisions() {
    singles_and_pairs_share_one_exact_count(|limit| {
        Algorithm::sliding_window(limit, Duration::from_secs(3600))
    });
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

mod packing {
    use proptest::prelude::*;

    use super::*;
    use crate::algorithm::sliding_window::WindowState;

    /// A window of 2^21 µs: with the wide limit below (2^30, which leaves two bits for the
    /// index) the product is the largest a policy may have.
    const W: u64 = 1 << 21;
    const NARROW: u64 = 5;
    const WIDE: u64 = 1 << 30;

    #[derive(Clone, Debug)]
    enum Op {
        Check {
            cost: u64,
            wide: bool,
            with_other: bool,
        },
        Peek {
            cost: u64,
            wide: bool,
        },
        Refund {
            cost: u64,
        },
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u64..4, any::<bool>(), any::<bool>())
                .prop_map(|(cost, wide, with_other)| Op::Check { cost, wide, with_other }),
            1 => (0u64..4, any::<bool>()).prop_map(|(cost, wide)| Op::Peek { cost, wide }),
            1 => (1u64..4).prop_map(|cost| Op::Refund { cost }),
            2 => (0u64..W / 2).prop_map(Op::Advance),
        ]
    }

    /// One decision on the window key, through `limiter`: alone (the compare-and-swap) or
    /// beside an always-admitting GCRA key (the exclusive path).
    fn decide(
        limiter: &MemoryLimiter<ManualClock>,
        keys: &[PolicyKey],
        check: bool,
        cost: u64,
    ) -> (Option<Duration>, u64, Duration) {
        let decision = if check {
            limiter.check_now(keys, cost)
        } else {
            limiter.peek_now(keys, cost)
        }
        .expect("valid");
        let window = &decision.policies()[0];
        (
            window.retry_after(),
            window.remaining(),
            window.reset_after(),
        )
    }

    /// The same decision on the bare arithmetic.
    fn model(
        state: &mut WindowState,
        now: u64,
        limit: u64,
        cost: u64,
        check: bool,
    ) -> (Option<Duration>, u64, Duration) {
        state.advance(now, W);
        let verdict = state.admits(now, limit, W, cost);
        if check && cost > 0 && verdict.is_ok() {
            state.consume(cost);
        }
        let status = state.status(now, limit, W);
        (
            verdict.err().map(Duration::from_micros),
            status.remaining,
            Duration::from_micros(status.reset_after),
        )
    }

    proptest! {
        /// A window key packed into its word, moved out of it when the window index
        /// outgrows the wide layout's two bits or a wide limit's counts outgrow the narrow
        /// layout, through single and multi-key decisions, peeks and refunds: every answer
        /// is the arithmetic's on one unpacked state.
        #[test]
        fn window_keys_decide_like_the_unpacked_arithmetic(ops in proptest::collection::vec(op(), 1..120)) {
            let start = 2 * W + 7;
            let clock = ManualClock::starting_at(Timestamp::from_micros(start));
            let limiter = MemoryLimiter::builder().clock(clock.clone()).shards(1).build();
            // Two policies of one name: the same key, read under either limit.
            let narrow = key("w", Algorithm::sliding_window(NARROW, Duration::from_micros(W)), "a");
            let wide = key("w", Algorithm::sliding_window(WIDE, Duration::from_micros(W)), "a");
            let other = key("other", Algorithm::token_bucket(1, Duration::from_millis(1), 10_000), "a");
            let mut state = WindowState::fresh(start, W);
            let mut now = start;
            for op in ops {
                let (keys, limit, check, cost) = match op {
                    Op::Advance(us) => {
                        clock.advance(Duration::from_micros(us));
                        now += us;
                        continue;
                    }
                    Op::Refund { cost } => {
                        limiter.refund_now(std::slice::from_ref(&narrow), cost).expect("valid");
                        state.refund(cost);
                        continue;
                    }
                    Op::Check { cost, wide: w, with_other } => {
                        let window = if w { &wide } else { &narrow };
                        let keys = if with_other { vec![window.clone(), other.clone()] } else { vec![window.clone()] };
                        (keys, if w { WIDE } else { NARROW }, true, cost)
                    }
                    Op::Peek { cost, wide: w } => {
                        (vec![if w { wide.clone() } else { narrow.clone() }], if w { WIDE } else { NARROW }, false, cost)
                    }
                };
                let got = decide(&limiter, &keys, check, cost);
                let expected = model(&mut state, now, limit, cost, check);
                prop_assert_eq!(got, expected, "at {} µs ({} windows in)", now, now / W);
            }
        }
    }
}
