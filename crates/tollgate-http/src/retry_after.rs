//! `Retry-After`, rounded one way for every answer: up to whole seconds, and never below one.
//!
//! Up, because a client told to come back early would only be refused again; at least one,
//! because `Retry-After: 0` reads as "now" and invites the same request at once. Every
//! `Retry-After` Tollgate writes — a rate limit's `429`, an idempotency `409` or `503`, the
//! payments server's own — goes through [`seconds`], from the wait at the precision it was
//! computed in.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tollgate_http::retry_after;
//!
//! assert_eq!(retry_after::seconds(Duration::from_millis(1_001)), 2);
//! assert_eq!(retry_after::seconds(Duration::ZERO), 1);
//! assert_eq!(retry_after::header_value(Duration::from_secs(30)), "30");
//! ```

use std::time::Duration;

use http::HeaderValue;

/// `wait` as `Retry-After` delta seconds: rounded up, at least 1.
pub fn seconds(wait: Duration) -> u64 {
    let whole = wait.as_secs();
    let rounded = if wait.subsec_nanos() > 0 {
        whole.saturating_add(1)
    } else {
        whole
    };
    rounded.max(1)
}

/// `wait` as a `Retry-After` header value (see [`seconds`]).
pub fn header_value(wait: Duration) -> HeaderValue {
    HeaderValue::from(seconds(wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_and_never_says_zero() {
        assert_eq!(seconds(Duration::ZERO), 1);
        assert_eq!(seconds(Duration::from_nanos(1)), 1);
        assert_eq!(seconds(Duration::from_secs(1)), 1);
        assert_eq!(seconds(Duration::from_micros(1_000_001)), 2);
        assert_eq!(seconds(Duration::from_secs(59)), 59);
        assert_eq!(seconds(Duration::MAX), u64::MAX);
    }
}
