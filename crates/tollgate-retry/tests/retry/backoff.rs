use std::time::Duration;

use proptest::prelude::*;
use tollgate_retry::backoff::{Backoff, Jitter};

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated)
    ]
}

proptest! {
    #[test]
    fn no_delay_exceeds_the_cap(
        base_ms in 0u64..5_000,
        cap_ms in 0u64..60_000,
        multiplier in 1u32..5,
        jitter in jitter(),
        seed in any::<u64>(),
    ) {
        let backoff = Backoff::exponential(Duration::from_millis(base_ms), Duration::from_millis(cap_ms))
            .multiplier(multiplier)
            .jitter(jitter);
        for (n, delay) in backoff.delays(seed).take(64).enumerate() {
            prop_assert!(delay <= backoff.cap(), "retry {}: {:?} > cap {:?}", n, delay, backoff.cap());
            if jitter == Jitter::Decorrelated {
                prop_assert!(delay >= backoff.base().min(backoff.cap()));
            }
        }
    }
}

/// The mean delay of retry n+1 is at least that of retry n, for every jitter kind (2 000 seeds;
/// a 3 % allowance absorbs sampling noise where the cap flattens the curve).
#[test]
fn delays_grow_in_expectation() {
    for jitter in [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ] {
        let backoff =
            Backoff::exponential(Duration::from_millis(10), Duration::from_secs(5)).jitter(jitter);
        let retries = 12;
        let mut sums = vec![0f64; retries];
        for seed in 0..2_000 {
            for (n, delay) in backoff.delays(seed).take(retries).enumerate() {
                sums[n] += delay.as_secs_f64();
            }
        }
        for n in 1..retries {
            assert!(
                sums[n] >= sums[n - 1] * 0.97,
                "{jitter:?}: mean delay fell from retry {} to {n}",
                n - 1
            );
        }
    }
}
