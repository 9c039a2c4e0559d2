//! How a duplicate polls the store while the request it duplicates is in flight.
//!
//! Capped exponential delays with full jitter: the first poll comes soon (most requests finish
//! in milliseconds), later ones back off so a long-running owner is not hammered, and the jitter
//! keeps many duplicates of one key from polling in lock step.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tollgate_idempotency::poll::PollSchedule;
//!
//! let schedule = PollSchedule::exponential(Duration::from_millis(10), Duration::from_millis(250));
//! assert!(schedule.delays(7).take(20).all(|d| d <= Duration::from_millis(250)));
//! let every_second = PollSchedule::constant(Duration::from_secs(1));
//! assert!(every_second.delays(7).take(3).all(|d| d == Duration::from_secs(1)));
//! ```

use std::time::Duration;

/// A polling schedule: the ceiling doubles from `first` up to `max`; with jitter, each delay is
/// drawn uniformly below its ceiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollSchedule {
    first: Duration,
    max: Duration,
    jitter: bool,
}

impl PollSchedule {
    /// Delays whose ceiling doubles from `first` to `max`, each drawn uniformly below it.
    pub fn exponential(first: Duration, max: Duration) -> Self {
        PollSchedule {
            first,
            max: max.max(first),
            jitter: true,
        }
    }

    /// The same delay every time, without jitter.
    pub fn constant(every: Duration) -> Self {
        PollSchedule {
            first: every,
            max: every,
            jitter: false,
        }
    }

    /// The delays, jittered from `seed` (give each waiter its own seed).
    pub fn delays(&self, seed: u64) -> impl Iterator<Item = Duration> + use<> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let (max, jitter) = (self.max, self.jitter);
        let mut ceiling = self.first;
        std::iter::repeat_with(move || {
            let delay = if jitter {
                let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(rng.u64(0..=nanos))
            } else {
                ceiling
            };
            ceiling = ceiling.saturating_mul(2).min(max);
            delay
        })
    }
}

impl Default for PollSchedule {
    /// 10 ms, doubling to 250 ms, full jitter.
    fn default() -> Self {
        PollSchedule::exponential(Duration::from_millis(10), Duration::from_millis(250))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every delay is below its ceiling, which doubles up to the cap.
        #[test]
        fn delays_stay_under_the_doubling_cap(first_ms in 1_u64..100, max_ms in 1_u64..2_000, seed: u64) {
            let schedule = PollSchedule::exponential(Duration::from_millis(first_ms), Duration::from_millis(max_ms));
            let mut ceiling = Duration::from_millis(first_ms);
            let cap = Duration::from_millis(max_ms.max(first_ms));
            for delay in schedule.delays(seed).take(30) {
                prop_assert!(delay <= ceiling);
                ceiling = (ceiling * 2).min(cap);
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let schedule = PollSchedule::default();
        let a: Vec<_> = schedule.delays(42).take(10).collect();
        let b: Vec<_> = schedule.delays(42).take(10).collect();
        assert_eq!(a, b);
    }
}
