//! HTTP response headers from a [`Decision`].
//!
//! Two conventions at once, from the same binding policy:
//! - GitHub's `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (Unix epoch
//!   seconds, rounded up);
//! - the IETF draft-ietf-httpapi-ratelimit-headers-10 structured fields
//!   `RateLimit-Policy: "name";q=LIMIT;w=WINDOW` and `RateLimit: "name";r=REMAINING;t=SECONDS`.
//!
//! A denied decision adds `Retry-After` in delta seconds, rounded up and never 0.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tollgate_ratelimit::{
//!     headers, Algorithm, Decision, Policy, PolicyDecision, PolicyKey, Scope, Timestamp,
//! };
//!
//! let policy = Arc::new(Policy::new("per-user", Scope::User,
//!     Algorithm::sliding_window(100, Duration::from_secs(60)))?);
//! let key = PolicyKey::new(policy, "alice");
//! let now = Timestamp::from_secs(1_700_000_000);
//! let decision = Decision::new(now, [PolicyDecision::new(
//!     &key, 0, Duration::from_millis(17_200), Some(Duration::from_millis(1_500)))]);
//!
//! let mut map = http::HeaderMap::new();
//! headers::write(&decision, &mut map);
//! assert_eq!(map["x-ratelimit-limit"], "100");
//! assert_eq!(map["x-ratelimit-remaining"], "0");
//! assert_eq!(map["x-ratelimit-reset"], "1700000018");
//! assert_eq!(map["ratelimit-policy"], "\"per-user\";q=100;w=60");
//! assert_eq!(map["ratelimit"], "\"per-user\";r=0;t=18");
//! assert_eq!(map["retry-after"], "2");
//! # Ok::<(), tollgate_ratelimit::Error>(())
//! ```

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use crate::Decision;

/// `X-RateLimit-Limit`.
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`.
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`.
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
/// `RateLimit-Policy` (IETF draft-10).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (IETF draft-10).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Whole seconds, rounded up: a client told to come back early would only be denied again.
pub fn ceil_secs(duration: Duration) -> u64 {
    duration
        .as_micros()
        .div_ceil(1_000_000)
        .try_into()
        .unwrap_or(u64::MAX)
}

/// The headers for `decision`, as `(name, value)` pairs. Empty when no policy applied.
pub fn to_pairs(decision: &Decision<'_>) -> Vec<(HeaderName, HeaderValue)> {
    let Some(binding) = decision.binding() else {
        return Vec::new();
    };
    // Policy names are validated to [A-Za-z0-9_.-], so they need no escaping inside an sf-string
    // and every value below is visible ASCII.
    let name = binding.policy().name();
    let reset_at = decision
        .now()
        .saturating_add(binding.reset_after())
        .as_secs_ceil();
    let window = ceil_secs(binding.policy().window());
    let mut pairs = vec![
        (X_RATELIMIT_LIMIT, HeaderValue::from(binding.limit())),
        (
            X_RATELIMIT_REMAINING,
            HeaderValue::from(binding.remaining()),
        ),
        (X_RATELIMIT_RESET, HeaderValue::from(reset_at)),
        (
            RATELIMIT_POLICY,
            structured(name, ("q", binding.limit()), ("w", window)),
        ),
        (
            RATELIMIT,
            structured(
                name,
                ("r", binding.remaining()),
                ("t", ceil_secs(binding.reset_after())),
            ),
        ),
    ];
    if let Some(wait) = decision.retry_after() {
        pairs.push((RETRY_AFTER, HeaderValue::from(ceil_secs(wait).max(1))));
    }
    pairs
}

/// Inserts the headers for `decision` into `headers`, replacing earlier values.
pub fn write(decision: &Decision<'_>, headers: &mut HeaderMap) {
    for (name, value) in to_pairs(decision) {
        headers.insert(name, value);
    }
}

/// `"name";a=1;b=2`, written without `format!` (this runs for every limited request).
fn structured(name: &str, first: (&str, u64), second: (&str, u64)) -> HeaderValue {
    let mut digits = itoa::Buffer::new();
    let mut text = Vec::with_capacity(name.len() + 48);
    text.push(b'"');
    text.extend_from_slice(name.as_bytes());
    text.push(b'"');
    for (parameter, value) in [first, second] {
        text.push(b';');
        text.extend_from_slice(parameter.as_bytes());
        text.push(b'=');
        text.extend_from_slice(digits.format(value).as_bytes());
    }
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_secs_rounds_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_micros(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn no_policy_no_headers() {
        let d = Decision::new(crate::Timestamp::EPOCH, []);
        assert!(to_pairs(&d).is_empty());
    }
}
