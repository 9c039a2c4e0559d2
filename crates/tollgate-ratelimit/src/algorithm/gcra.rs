//! GCRA, the Generic Cell Rate Algorithm: a token bucket stored as one timestamp.
//!
//! `tat` (theoretical arrival time) is when the bucket would be full again. A request of cost `n`
//! moves it to `max(tat, now) + n·T`, and is admitted if that is at most `τ = burst·T` ahead of
//! `now`. T is the emission interval (µs per token).

use super::status::{Status, floor_div};

/// The theoretical arrival time, in µs since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GcraState {
    pub(crate) tat: u64,
}

impl GcraState {
    #[inline]
    pub(crate) fn fresh(now: u64) -> Self {
        GcraState { tat: now }
    }

    #[inline]
    pub(crate) fn status(&self, now: u64, interval: u64, tolerance: u64) -> Status {
        let ahead = self.tat.saturating_sub(now);
        Status {
            remaining: floor_div(tolerance.saturating_sub(ahead), interval),
            reset_after: ahead,
        }
    }

    #[inline]
    pub(crate) fn admits(
        &self,
        now: u64,
        interval: u64,
        tolerance: u64,
        cost: u64,
    ) -> Result<(), u64> {
        let ahead = self.tat.max(now) - now + cost * interval;
        if ahead <= tolerance {
            Ok(())
        } else {
            Err(ahead - tolerance)
        }
    }

    #[inline]
    pub(crate) fn consume(&mut self, now: u64, interval: u64, cost: u64) {
        self.tat = self.tat.max(now) + cost * interval;
    }

    /// Moves `tat` back by `cost` tokens, but never into the past: a full bucket stays full.
    #[inline]
    pub(crate) fn refund(&mut self, now: u64, interval: u64, cost: u64) {
        self.tat = self
            .tat
            .saturating_sub(cost * interval)
            .max(now.min(self.tat));
    }

    #[inline]
    pub(crate) fn idle_at(&self) -> u64 {
        self.tat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20 per second, burst 50.
    const T: u64 = 50_000;
    const TAU: u64 = 50 * T;

    #[test]
    fn burst_then_steady_rate() {
        let mut s = GcraState::fresh(0);
        for _ in 0..50 {
            assert!(s.admits(0, T, TAU, 1).is_ok());
            s.consume(0, T, 1);
        }
        assert_eq!(s.admits(0, T, TAU, 1), Err(T));
        assert_eq!(
            s.status(0, T, TAU),
            Status {
                remaining: 0,
                reset_after: TAU
            }
        );
        assert!(s.admits(T, T, TAU, 1).is_ok());
        s.refund(T, T, 10);
        assert_eq!(s.status(T, T, TAU).remaining, 11);
    }
}
