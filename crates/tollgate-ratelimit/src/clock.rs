//! Time sources: the limiter never reads the wall clock directly.
//!
//! Every decision takes its `now` from a [`Clock`]. Production code uses [`SystemClock`]; tests use
//! [`ManualClock`] and move time forward with [`ManualClock::advance`], so no test ever sleeps to
//! wait out a window. (The Redis backend uses the Redis server's `TIME` instead unless a clock is
//! injected for tests.)
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tollgate_ratelimit::clock::{Clock, ManualClock, Timestamp};
//!
//! let clock = ManualClock::new(Timestamp::from_secs(1_700_000_000));
//! clock.advance(Duration::from_millis(1500));
//! assert_eq!(clock.now().as_micros(), 1_700_000_001_500_000);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time: whole microseconds since the Unix epoch.
///
/// Microseconds, not nanoseconds, because the same arithmetic runs in Redis Lua, whose numbers are
/// IEEE doubles: microsecond timestamps stay below 2^53 for the next 280 years, so every integer
/// operation on them is exact on both sides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Timestamp(micros)
    }

    /// A timestamp `secs` seconds after the Unix epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Timestamp(secs * 1_000_000)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Seconds since the Unix epoch, rounded up (a reset time must never be early).
    pub const fn as_secs_ceil(self) -> u64 {
        self.0.div_ceil(1_000_000)
    }

    /// This timestamp moved forward by `duration` (saturating).
    pub fn saturating_add(self, duration: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_to_micros(duration)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// Whole microseconds of a duration, saturating at `u64::MAX`.
pub(crate) fn duration_to_micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Something that tells the time.
///
/// Implementations must be cheap (a decision reads the clock once) and should be monotonic; the
/// algorithms tolerate a clock that steps backwards by treating the past as "now" (they never
/// hand out quota for time that has not passed).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

/// The real time: the wall clock read once at construction, advanced by a monotonic clock.
///
/// Anchoring to a monotonic clock means that NTP steps of the wall clock after start-up never
/// move the limiter's time backwards or forwards; the epoch values it reports (for
/// `X-RateLimit-Reset`) stay within the drift accumulated since the clock was created. The
/// monotonic clock is `quanta`'s (the TSC where it is reliable, as governor uses): reading it
/// costs a few nanoseconds where `clock_gettime` costs tens, which is a tenth of a decision.
#[derive(Clone, Debug)]
pub struct SystemClock {
    epoch_at_start: u64,
    monotonic: quanta::Clock,
    raw_at_start: u64,
}

impl SystemClock {
    /// A clock anchored at the current wall-clock time.
    pub fn new() -> Self {
        let epoch_at_start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(duration_to_micros)
            .unwrap_or(0);
        let monotonic = quanta::Clock::new();
        SystemClock {
            epoch_at_start,
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
    fn now(&self) -> Timestamp {
        // Raw counter and one scaling, not `quanta::Instant::now()`, which also checks for a
        // thread-local mock on every call.
        let nanos = self
            .monotonic
            .delta_as_nanos(self.raw_at_start, self.monotonic.raw());
        Timestamp(self.epoch_at_start.saturating_add(nanos / 1_000))
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    micros: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock showing `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            micros: Arc::new(AtomicU64::new(start.as_micros())),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.micros
            .fetch_add(duration_to_micros(by), Ordering::SeqCst);
    }

    /// Sets the clock to `to` (which may be in the past, to test clock steps).
    pub fn set(&self, to: Timestamp) {
        self.micros.store(to.as_micros(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.micros.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_near_wall_clock_and_monotonic() {
        let clock = SystemClock::new();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(duration_to_micros)
            .unwrap_or(0);
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
        assert!(a.as_micros().abs_diff(wall) < 1_000_000);
    }

    #[test]
    fn manual_clock_clones_share_time() {
        let clock = ManualClock::new(Timestamp::from_secs(10));
        let other = clock.clone();
        clock.advance(Duration::from_micros(7));
        assert_eq!(other.now(), Timestamp::from_micros(10_000_007));
        other.set(Timestamp::from_secs(1));
        assert_eq!(clock.now().as_secs_ceil(), 1);
    }

    #[test]
    fn secs_round_up() {
        assert_eq!(Timestamp::from_micros(1_000_001).as_secs_ceil(), 2);
        assert_eq!(Timestamp::from_micros(1_000_000).as_secs_ceil(), 1);
        assert_eq!(Timestamp::from_micros(1_500_000).to_string(), "1.500000");
    }
}
