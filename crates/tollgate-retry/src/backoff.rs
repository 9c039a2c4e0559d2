//! Delays between attempts: constant or exponential, with four kinds of jitter, capped *after*
//! jitter so that no delay ever exceeds the cap.
//!
//! The jitter kinds are those of the AWS Architecture Blog's "Exponential Backoff and Jitter":
//! with `v = min(cap, base × multiplierⁿ)` for retry `n` (0-based),
//! - [`Jitter::None`] gives `v`;
//! - [`Jitter::Full`] gives uniform in `[0, v]` (the default: fewest total calls under
//!   contention);
//! - [`Jitter::Equal`] gives `v/2` + uniform in `[0, v/2]`;
//! - [`Jitter::Decorrelated`] gives `min(cap, uniform in [base, 3 × previous])`, starting from
//!   `base`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tollgate_retry::backoff::{Backoff, Jitter};
//!
//! let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(2))
//!     .jitter(Jitter::None);
//! let delays: Vec<_> = backoff.delays(0).take(6).map(|d| d.as_millis()).collect();
//! assert_eq!(delays, [100, 200, 400, 800, 1600, 2000]);
//!
//! // Seeded jitter is reproducible and never above the cap.
//! let full = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(2));
//! let a: Vec<_> = full.delays(7).take(20).collect();
//! assert_eq!(a, full.delays(7).take(20).collect::<Vec<_>>());
//! assert!(a.iter().all(|d| *d <= Duration::from_secs(2)));
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How randomness is added to a delay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Jitter {
    /// No randomness.
    None,
    /// Uniform in `[0, v]`.
    #[default]
    Full,
    /// `v/2` plus uniform in `[0, v/2]`.
    Equal,
    /// `min(cap, uniform in [base, 3 × previous delay])`.
    Decorrelated,
}

/// A delay schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    multiplier: u32,
    jitter: Jitter,
}

impl Backoff {
    /// The same delay every time (jitter still applies if set; none by default).
    pub fn constant(delay: Duration) -> Self {
        Backoff {
            base: delay,
            cap: delay,
            multiplier: 1,
            jitter: Jitter::None,
        }
    }

    /// `base`, doubling each retry, never above `cap`; full jitter by default.
    pub fn exponential(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            multiplier: 2,
            jitter: Jitter::Full,
        }
    }

    /// The growth factor per retry (2 for exponential, 1 for constant).
    pub fn multiplier(mut self, multiplier: u32) -> Self {
        self.multiplier = multiplier.max(1);
        self
    }

    /// The jitter kind.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The first delay before jitter.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest delay ever returned.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The jitter kind.
    pub fn jitter_kind(&self) -> Jitter {
        self.jitter
    }

    /// The endless sequence of delays, with randomness from `seed` (use a random seed in
    /// production, a fixed one in tests).
    pub fn delays(&self, seed: u64) -> Delays {
        Delays {
            backoff: *self,
            retry: 0,
            previous: self.base,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// `min(cap, base × multiplierⁿ)`, the value jitter works from, saturating.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = self.multiplier.checked_pow(retry).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

/// The delays of a [`Backoff`], one per retry.
#[derive(Clone, Debug)]
pub struct Delays {
    backoff: Backoff,
    retry: u32,
    previous: Duration,
    rng: fastrand::Rng,
}

impl Delays {
    fn uniform(&mut self, low: Duration, high: Duration) -> Duration {
        let (low, high) = (nanos(low), nanos(high.max(low)));
        Duration::from_nanos(self.rng.u64(low..=high))
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let b = self.backoff;
        let ceiling = b.ceiling(self.retry);
        let delay = match b.jitter {
            Jitter::None => ceiling,
            Jitter::Full => self.uniform(Duration::ZERO, ceiling),
            Jitter::Equal => ceiling / 2 + self.uniform(Duration::ZERO, ceiling - ceiling / 2),
            Jitter::Decorrelated => self.uniform(b.base, self.previous.saturating_mul(3)),
        };
        // The cap applies after jitter, whatever the jitter did.
        let delay = delay.min(b.cap);
        self.previous = delay.max(b.base);
        self.retry = self.retry.saturating_add(1);
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_and_equal() {
        let c: Vec<_> = Backoff::constant(Duration::from_millis(50))
            .delays(1)
            .take(3)
            .collect();
        assert_eq!(c, [Duration::from_millis(50); 3]);
        let equal = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1))
            .jitter(Jitter::Equal);
        for (n, d) in equal.delays(3).take(8).enumerate() {
            let v = equal.ceiling(u32::try_from(n).expect("small"));
            assert!(
                d >= v / 2 && d <= v,
                "retry {n}: {d:?} not in [{:?}, {v:?}]",
                v / 2
            );
        }
    }

    #[test]
    fn huge_retry_counts_saturate() {
        let b = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(20));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(20));
        assert!(
            b.delays(0)
                .nth(10_000)
                .is_some_and(|d| d <= Duration::from_secs(20))
        );
    }
}
