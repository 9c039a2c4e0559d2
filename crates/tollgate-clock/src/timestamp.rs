//! [`Timestamp`]: microseconds since the Unix epoch.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time: whole microseconds since the Unix epoch.
///
/// Microseconds, not nanoseconds, because the same arithmetic runs in Redis Lua, whose numbers
/// are IEEE doubles: microsecond timestamps stay below 2^53 for the next 280 years, so every
/// integer operation on them is exact on both sides.
///
/// Arithmetic saturates: `a - b` is zero when `b` is later than `a`, and adding a huge duration
/// gives the largest timestamp rather than wrapping.
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
        Timestamp(secs.saturating_mul(1_000_000))
    }

    /// The wall-clock time of `time` (the epoch for times before it).
    pub fn from_system_time(time: SystemTime) -> Self {
        Timestamp(
            time.duration_since(UNIX_EPOCH)
                .map(duration_to_micros)
                .unwrap_or(0),
        )
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

    /// This timestamp moved back by `duration` (the epoch at the earliest).
    pub fn saturating_sub(self, duration: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_to_micros(duration)))
    }

    /// The time from `earlier` to this timestamp; zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, duration: Duration) -> Timestamp {
        self.saturating_add(duration)
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;

    fn sub(self, duration: Duration) -> Timestamp {
        self.saturating_sub(duration)
    }
}

impl Sub for Timestamp {
    type Output = Duration;

    /// The time between two timestamps, zero if `earlier` is the later one.
    fn sub(self, earlier: Timestamp) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// Whole microseconds of a duration, saturating at `u64::MAX`.
pub fn duration_to_micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secs_round_up_and_display() {
        assert_eq!(Timestamp::from_micros(1_000_001).as_secs_ceil(), 2);
        assert_eq!(Timestamp::from_micros(1_000_000).as_secs_ceil(), 1);
        assert_eq!(Timestamp::from_micros(1_500_000).to_string(), "1.500000");
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_secs(10);
        assert_eq!(
            t + Duration::from_millis(1),
            Timestamp::from_micros(10_001_000)
        );
        assert_eq!(t - Duration::from_secs(20), Timestamp::EPOCH);
        assert_eq!(t - Timestamp::from_secs(11), Duration::ZERO);
        assert_eq!(Timestamp::from_secs(12) - t, Duration::from_secs(2));
        assert_eq!(t + Duration::MAX, Timestamp::from_micros(u64::MAX));
        assert_eq!(Timestamp::from_secs(u64::MAX).as_micros(), u64::MAX);
    }

    #[test]
    fn from_system_time() {
        let t = UNIX_EPOCH + Duration::from_micros(42);
        assert_eq!(Timestamp::from_system_time(t), Timestamp::from_micros(42));
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(Timestamp::from_system_time(before), Timestamp::EPOCH);
    }
}
