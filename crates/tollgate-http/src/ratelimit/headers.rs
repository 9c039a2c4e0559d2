//! HTTP response headers from a [`Decision`].
//!
//! Two conventions at once, from the same binding policy:
//! - GitHub's `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (Unix epoch
//!   seconds, rounded up);
//! - the IETF draft-ietf-httpapi-ratelimit-headers-10 structured fields
//!   `RateLimit-Policy: "name";q=LIMIT;w=WINDOW` and `RateLimit: "name";r=REMAINING;t=SECONDS`.
//!
//! A denied decision adds `Retry-After` in delta seconds, rounded up and never 0
//! ([`retry_after`](crate::retry_after)).
//!
//! The policy described is [`Decision::disclosed`]: the binding one among the policies counted
//! for the caller alone. A policy every caller shares (global or endpoint scope) is never
//! described, since its remaining count would let anyone watch everyone's traffic (the IETF
//! draft's security considerations ask servers not to disclose such capacity); when one of them
//! alone refuses, the answer carries `Retry-After` and nothing else.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tollgate_http::ratelimit::headers;
//! use tollgate_ratelimit::{
//!     Algorithm, Decision, Policy, PolicyDecision, PolicyKey, Scope, Timestamp,
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

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use tollgate_ratelimit::Decision;

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

/// Whole seconds, rounded up: the reset and window values (`Retry-After` is
/// [`retry_after::seconds`](crate::retry_after::seconds), which is never below one).
fn ceil_secs(duration: Duration) -> u64 {
    duration
        .as_micros()
        .div_ceil(1_000_000)
        .try_into()
        .unwrap_or(u64::MAX)
}

/// The headers for `decision`, as `(name, value)` pairs. Empty when no policy applied.
pub fn to_pairs(decision: &Decision<'_>) -> Vec<(HeaderName, HeaderValue)> {
    let mut pairs = Vec::with_capacity(6);
    render(decision, |name, value| pairs.push((name, value)));
    pairs
}

/// Inserts the headers for `decision` into `headers`, replacing earlier values.
pub fn write(decision: &Decision<'_>, headers: &mut HeaderMap) {
    render(decision, |name, value| {
        headers.insert(name, value);
    });
}

/// Renders every header of `decision` into one buffer and hands each out as a slice of it:
/// one allocation for all of them instead of one per value (this runs for every request a
/// limit applies to, and a flood of 429s is made of nothing else).
fn render(decision: &Decision<'_>, mut emit: impl FnMut(HeaderName, HeaderValue)) {
    let retry_after = decision.retry_after().map(crate::retry_after::seconds);
    let Some(binding) = decision.disclosed() else {
        // Only shared policies applied, or a shared one alone refused: the wait is all the
        // caller learns.
        if let Some(retry) = retry_after {
            emit(RETRY_AFTER, HeaderValue::from(retry));
        }
        return;
    };
    // Policy names are validated to [A-Za-z0-9_.-], so they need no escaping inside an sf-string
    // and every value below is visible ASCII.
    let name = binding.policy().name();
    let reset_at = decision
        .now()
        .saturating_add(binding.reset_after())
        .as_secs_ceil();
    let window = ceil_secs(binding.policy().window());
    let mut text = Writer {
        buffer: BytesMut::with_capacity(2 * name.len() + 112),
        digits: itoa::Buffer::new(),
    };
    let limit = text.number(binding.limit());
    let remaining = text.number(binding.remaining());
    let reset = text.number(reset_at);
    let policy = text.structured(name, ("q", binding.limit()), ("w", window));
    let state = text.structured(
        name,
        ("r", binding.remaining()),
        ("t", ceil_secs(binding.reset_after())),
    );
    let retry = retry_after.map(|seconds| text.number(seconds));
    let bytes = text.buffer.freeze();
    let value = |range: std::ops::Range<usize>| {
        HeaderValue::from_maybe_shared(bytes.slice(range))
            .unwrap_or_else(|_| HeaderValue::from_static(""))
    };
    emit(X_RATELIMIT_LIMIT, value(limit));
    emit(X_RATELIMIT_REMAINING, value(remaining));
    emit(X_RATELIMIT_RESET, value(reset));
    emit(RATELIMIT_POLICY, value(policy));
    emit(RATELIMIT, value(state));
    if let Some(retry) = retry {
        emit(RETRY_AFTER, value(retry));
    }
}

/// Header values written one after another into one buffer; each call returns where its value
/// is.
struct Writer {
    buffer: BytesMut,
    digits: itoa::Buffer,
}

impl Writer {
    fn number(&mut self, value: u64) -> std::ops::Range<usize> {
        let start = self.buffer.len();
        self.buffer
            .extend_from_slice(self.digits.format(value).as_bytes());
        start..self.buffer.len()
    }

    /// `"name";a=1;b=2`.
    fn structured(
        &mut self,
        name: &str,
        first: (&str, u64),
        second: (&str, u64),
    ) -> std::ops::Range<usize> {
        let start = self.buffer.len();
        self.buffer.extend_from_slice(b"\"");
        self.buffer.extend_from_slice(name.as_bytes());
        self.buffer.extend_from_slice(b"\"");
        for (parameter, value) in [first, second] {
            self.buffer.extend_from_slice(b";");
            self.buffer.extend_from_slice(parameter.as_bytes());
            self.buffer.extend_from_slice(b"=");
            self.buffer
                .extend_from_slice(self.digits.format(value).as_bytes());
        }
        start..self.buffer.len()
    }
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
    fn shared_policies_are_never_described() {
        use std::sync::Arc;
        use tollgate_ratelimit::{Algorithm, Policy, PolicyDecision, PolicyKey, Scope};
        let key = |name: &str, scope: Scope| {
            let algorithm = Algorithm::sliding_window(100, Duration::from_secs(60));
            let policy = Policy::new(name, scope, algorithm).expect("valid");
            PolicyKey::new(Arc::new(policy), "k")
        };
        let (global, user) = (key("global", Scope::Global), key("per-user", Scope::User));
        let at = tollgate_ratelimit::Timestamp::from_secs(1_000);
        let verdict = |key, remaining, wait: Option<u64>| {
            PolicyDecision::new(
                key,
                remaining,
                Duration::from_secs(30),
                wait.map(Duration::from_secs),
            )
        };
        // The global policy is tighter, but only the caller's own is shown.
        let allowed = Decision::new(at, [verdict(&global, 3, None), verdict(&user, 40, None)]);
        let map = to_pairs(&allowed);
        let value = |name: &HeaderName| map.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        assert_eq!(
            value(&X_RATELIMIT_REMAINING).as_ref().map(|v| v.as_bytes()),
            Some(&b"40"[..])
        );
        assert_eq!(
            value(&RATELIMIT_POLICY).as_ref().map(|v| v.as_bytes()),
            Some(&b"\"per-user\";q=100;w=60"[..])
        );
        // Refused by the global policy alone: the wait, nothing else.
        let denied = Decision::new(at, [verdict(&global, 0, Some(7)), verdict(&user, 40, None)]);
        let map = to_pairs(&denied);
        assert_eq!(map.len(), 1, "{map:?}");
        assert_eq!(map[0].0, RETRY_AFTER);
        assert_eq!(map[0].1, "7");
        // Only shared policies: nothing but a refusal's wait.
        assert!(to_pairs(&Decision::new(at, [verdict(&global, 5, None)])).is_empty());
    }

    #[test]
    fn no_policy_no_headers() {
        let d = Decision::new(tollgate_ratelimit::Timestamp::EPOCH, []);
        assert!(to_pairs(&d).is_empty());
    }
}
