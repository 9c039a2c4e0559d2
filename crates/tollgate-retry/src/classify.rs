//! Which outcomes are worth another attempt, and which requests may be repeated at all.
//!
//! Retryable: connection errors and timeouts (the caller says so), and the statuses 408, 429,
//! 500, 502, 503, 504. `409 Conflict` is retryable only when the response carries `Retry-After`:
//! that is how Tollgate says "the same idempotency key is still in progress"; any other 409 is a
//! real conflict. Every other 4xx, `422` above all (same key, different request), is final.
//!
//! A request may be repeated only if it is idempotent: safe methods, `PUT` and `DELETE`, or any
//! method (such as `POST`) that carries an `Idempotency-Key`, which must then be sent unchanged on
//! every attempt.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use http::{HeaderMap, HeaderValue, Method, StatusCode};
//! use tollgate_retry::classify::{classify_response, may_retry, Verdict};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("retry-after", HeaderValue::from_static("2"));
//! let now = SystemTime::now();
//! assert_eq!(classify_response(StatusCode::TOO_MANY_REQUESTS, &headers, now),
//!            Verdict::Retry { after: Some(Duration::from_secs(2)) });
//! assert_eq!(classify_response(StatusCode::CONFLICT, &headers, now),
//!            Verdict::Retry { after: Some(Duration::from_secs(2)) });
//! assert_eq!(classify_response(StatusCode::CONFLICT, &HeaderMap::new(), now), Verdict::Final);
//! assert_eq!(classify_response(StatusCode::UNPROCESSABLE_ENTITY, &headers, now), Verdict::Final);
//!
//! let mut post = HeaderMap::new();
//! assert!(!may_retry(&Method::POST, &post));
//! post.insert("idempotency-key", HeaderValue::from_static("order-7c1f0e9a2b4d4e11"));
//! assert!(may_retry(&Method::POST, &post));
//! ```

use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, Method, StatusCode};

use crate::budget::Cause;
use crate::retry::Attempt;

/// The statuses retried by default.
pub const RETRYABLE_STATUSES: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Try again; `after` is the server's `Retry-After`, if it sent one.
    Retry {
        /// The server's requested wait.
        after: Option<Duration>,
    },
    /// Do not try again: success, or a failure another attempt cannot fix.
    Final,
}

/// Whether `status` is in [`RETRYABLE_STATUSES`].
pub fn is_retryable_status(status: StatusCode) -> bool {
    RETRYABLE_STATUSES.contains(&status.as_u16())
}

/// Classifies a response by status and headers. An unparsable `Retry-After` counts as absent.
pub fn classify_response(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Verdict {
    let after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| crate::retry_after::parse(v, now).ok());
    let retryable =
        is_retryable_status(status) || (status == StatusCode::CONFLICT && after.is_some());
    if retryable {
        Verdict::Retry { after }
    } else {
        Verdict::Final
    }
}

/// The [`Attempt`] an HTTP call's result asks for: a response by [`classify_response`], any
/// transport error retried.
pub fn http_attempt<R, E>(result: &Result<http::Response<R>, E>, now: SystemTime) -> Attempt {
    let response = match result {
        Ok(response) => response,
        Err(_) => return Attempt::retry(),
    };
    match classify_response(response.status(), response.headers(), now) {
        Verdict::Retry { after } => Attempt::Retry {
            after,
            cause: Cause::Error,
        },
        Verdict::Final => Attempt::Done,
    }
}

/// Whether a request with this method and these headers may be sent more than once.
pub fn may_retry(method: &Method, headers: &HeaderMap) -> bool {
    method.is_idempotent() || headers.contains_key("idempotency-key")
}
