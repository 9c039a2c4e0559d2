//! The [`Clock`] trait and the real clock.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use crate::timestamp::Timestamp;

/// Something that tells the time.
///
/// Implementations must be cheap (a rate-limit decision reads the clock once) and should be
/// monotonic; Tollgate's algorithms tolerate a clock that steps backwards by treating the past
/// as "now" (they never hand out quota or end a lease for time that has not passed).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for Box<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

/// The real time: the wall clock read once at construction, advanced by a monotonic clock.
///
/// Anchoring to a monotonic clock means that NTP steps of the wall clock after start-up never
/// move Tollgate's time backwards or forwards; the epoch values it reports (for
/// `X-RateLimit-Reset`) stay within the drift accumulated since the clock was created. The
/// monotonic clock is `quanta`'s (the TSC where it is reliable): reading it costs a few
/// nanoseconds where `clock_gettime` costs tens.
#[derive(Clone, Debug)]
pub struct SystemClock {
    epoch_at_start: u64,
    monotonic: quanta::Clock,
    raw_at_start: u64,
}

impl SystemClock {
    /// A clock anchored at the current wall-clock time.
    pub fn new() -> Self {
        let monotonic = quanta::Clock::new();
        SystemClock {
            epoch_at_start: Timestamp::from_system_time(SystemTime::now()).as_micros(),
            raw_at_start: monotonic.raw(),
            monotonic,
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Timestamp {
        // Raw counter and one scaling, not `quanta::Instant::now()`, which also checks for a
        // thread-local mock on every call.
        let nanos = self
            .monotonic
            .delta_as_nanos(self.raw_at_start, self.monotonic.raw());
        Timestamp::from_micros(self.epoch_at_start.saturating_add(nanos / 1_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_near_wall_clock_and_monotonic() {
        let clock = SystemClock::new();
        let wall = Timestamp::from_system_time(SystemTime::now());
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
        assert!(a.as_micros().abs_diff(wall.as_micros()) < 1_000_000);
    }
}
