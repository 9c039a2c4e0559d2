//! `Retry-After` (RFC 9110 §10.2.3): delta-seconds or an HTTP-date, clamped to a sane range.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime, UNIX_EPOCH};
//! use tollgate_retry::retry_after::{parse, RetryAfterBounds};
//!
//! let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000); // Tue, 14 Nov 2023 22:13:20 GMT
//! assert_eq!(parse("120", now)?, Duration::from_secs(120));
//! assert_eq!(parse("Tue, 14 Nov 2023 22:14:00 GMT", now)?, Duration::from_secs(40));
//! assert_eq!(parse("Tue, 14 Nov 2023 22:00:00 GMT", now)?, Duration::ZERO); // in the past
//! assert!(parse("soon", now).is_err());
//!
//! let bounds = RetryAfterBounds::new(Duration::from_millis(100), Duration::from_secs(60));
//! assert_eq!(bounds.clamp(Duration::from_secs(3600)), Duration::from_secs(60));
//! # Ok::<(), tollgate_retry::Error>(())
//! ```

use std::time::{Duration, SystemTime};

use crate::Error;

/// Parses a `Retry-After` value relative to `now` (the wall clock: an HTTP-date is wall time).
/// A date in the past means "now" (`Duration::ZERO`).
pub fn parse(value: &str, now: SystemTime) -> Result<Duration, Error> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Delta-seconds; absurdly large values saturate rather than fail (the clamp decides).
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Ok(Duration::from_secs(secs));
    }
    let at =
        httpdate::parse_http_date(value).map_err(|_| Error::InvalidRetryAfter(value.to_owned()))?;
    Ok(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The range a server's `Retry-After` is trusted within.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryAfterBounds {
    min: Duration,
    max: Duration,
}

impl RetryAfterBounds {
    /// Waits shorter than `min` are lengthened and longer than `max` shortened (a server asking
    /// for an hour should not park a client for an hour).
    pub fn new(min: Duration, max: Duration) -> Self {
        RetryAfterBounds {
            min,
            max: max.max(min),
        }
    }

    /// The shortest wait.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The longest wait.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// `wait` within the bounds.
    pub fn clamp(&self, wait: Duration) -> Duration {
        wait.clamp(self.min, self.max)
    }
}

impl Default for RetryAfterBounds {
    /// 0 to 60 s.
    fn default() -> Self {
        RetryAfterBounds::new(Duration::ZERO, Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn all_three_date_formats_and_odd_input() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        let later = Duration::from_secs(3);
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:49:40 GMT", now).expect("imf"),
            later
        );
        assert_eq!(
            parse("Sunday, 06-Nov-94 08:49:40 GMT", now).expect("rfc850"),
            later
        );
        assert_eq!(
            parse("Sun Nov  6 08:49:40 1994", now).expect("asctime"),
            later
        );
        assert_eq!(parse(" 7 ", now).expect("trimmed"), Duration::from_secs(7));
        assert_eq!(
            parse("99999999999999999999999", now).expect("saturates"),
            Duration::from_secs(u64::MAX)
        );
        for bad in ["", "-1", "1.5", "0x10", "tomorrow"] {
            assert!(parse(bad, now).is_err(), "{bad:?}");
        }
    }
}
