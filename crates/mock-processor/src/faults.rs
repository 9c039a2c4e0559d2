//! Which fault, if any, a charge request meets: one roll of seeded dice per request.

use std::time::Duration;

use parking_lot::Mutex;

use crate::options::Options;

/// What happens before the charge is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Before {
    /// Charge.
    Proceed,
    /// `429` with `Retry-After`; nothing charged.
    Throttle,
    /// A server error (`500` or `503`); nothing charged.
    Fail { unavailable: bool },
}

/// What happens after the charge is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct After {
    /// How long the answer takes.
    pub(crate) delay: Duration,
    /// The connection is closed instead of answering.
    pub(crate) lose: bool,
}

/// The configured rates and the dice.
#[derive(Debug)]
pub(crate) struct Faults {
    options: Options,
    dice: Mutex<fastrand::Rng>,
}

impl Faults {
    pub(crate) fn new(options: &Options) -> Self {
        let dice = match options.seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        Faults {
            options: options.clone(),
            dice: Mutex::new(dice),
        }
    }

    fn roll(&self, rate: f64) -> bool {
        // A zero rate never rolls, so turning one fault on leaves the others' sequence alone.
        rate > 0.0 && self.dice.lock().f64() < rate
    }

    /// Before charging: throttled, failed, or on.
    pub(crate) fn before(&self) -> Before {
        if self.roll(self.options.throttle_rate) {
            Before::Throttle
        } else if self.roll(self.options.fail_rate) {
            Before::Fail {
                unavailable: self.dice.lock().bool(),
            }
        } else {
            Before::Proceed
        }
    }

    /// Whether a new charge is declined.
    pub(crate) fn declines(&self) -> bool {
        self.roll(self.options.decline_rate)
    }

    /// After charging: how long until the answer, and whether it is lost.
    pub(crate) fn after(&self) -> After {
        let options = &self.options;
        let delay = if self.roll(options.slow_rate) {
            options.slow_latency
        } else if options.jitter.is_zero() {
            options.latency
        } else {
            options.latency + options.jitter.mul_f64(self.dice.lock().f64())
        };
        After {
            delay,
            lose: self.roll(options.lose_rate),
        }
    }

    /// `Retry-After` of a throttled request, in seconds.
    pub(crate) fn retry_after(&self) -> u32 {
        self.options.retry_after
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn faults(args: &[&str]) -> Faults {
        let args = ["mock-processor", "--seed", "7"].iter().chain(args);
        Faults::new(&Options::try_parse_from(args).expect("options"))
    }

    #[test]
    fn no_rates_no_faults() {
        let faults = faults(&[]);
        for _ in 0..1000 {
            assert_eq!(faults.before(), Before::Proceed);
            assert!(!faults.declines());
            let after = faults.after();
            assert_eq!((after.delay, after.lose), (Duration::ZERO, false));
        }
    }

    #[test]
    fn rates_are_shares_of_requests_and_a_seed_repeats_them() {
        let args = [
            "--fail-rate",
            "0.1",
            "--lose-rate",
            "0.2",
            "--jitter",
            "10ms",
        ];
        let (one, two) = (faults(&args), faults(&args));
        let mut failed = 0;
        let mut lost = 0;
        for _ in 0..10_000 {
            let (before, after) = (one.before(), one.after());
            assert_eq!((before, after), (two.before(), two.after()), "same seed");
            failed += usize::from(before != Before::Proceed);
            lost += usize::from(after.lose);
            assert!(after.delay <= Duration::from_millis(10));
        }
        assert!((800..1200).contains(&failed), "{failed}");
        assert!((1800..2200).contains(&lost), "{lost}");
    }
}
