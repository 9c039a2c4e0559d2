//! [`RetryConfig`]: the recommended client policy, exactly as `GET /api/v1/retry-config`
//! publishes it, and the constructor that turns it into a [`RetryPolicy`].
//!
//! # Example
//!
//! ```
//! use tollgate_retry::config::RetryConfig;
//!
//! let published = serde_json::to_value(RetryConfig::default()).unwrap();
//! assert_eq!(published["max_attempts"], 3);
//! assert_eq!(published["jitter"], "full");
//! assert_eq!(published["retryable_statuses"], serde_json::json!([408, 429, 500, 502, 503, 504]));
//!
//! // A client obeys what the server published.
//! let config: RetryConfig = serde_json::from_value(published).unwrap();
//! let policy = config.to_policy()?;
//! assert_eq!(policy.attempt_limit(), 3);
//! # Ok::<(), tollgate_retry::Error>(())
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::backoff::{Backoff, Jitter};
use crate::classify::RETRYABLE_STATUSES;
use crate::retry::RetryPolicy;
use crate::retry_after::RetryAfterBounds;

/// The recommended retry policy for clients of a Tollgate API. Start from
/// `RetryConfig::default()` and set the fields you need; new fields can come without breaking
/// your code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// The first retry's delay before jitter, in milliseconds.
    pub base_delay_ms: u64,
    /// No delay is longer, after jitter, in milliseconds.
    pub max_delay_ms: u64,
    /// `none`, `full`, `equal` or `decorrelated`.
    pub jitter: Jitter,
    /// Statuses worth another attempt.
    pub retryable_statuses: Vec<u16>,
    /// Whether `409 Conflict` with `Retry-After` (an idempotency key still in progress) is retried.
    pub retry_in_progress_conflicts: bool,
    /// Whether the server's `Retry-After` replaces the computed delay.
    pub honor_retry_after: bool,
    /// The longest `Retry-After` obeyed, in milliseconds (longer ones are shortened to this).
    pub max_retry_after_ms: u64,
    /// Give up once this much time has passed since the first attempt, in milliseconds.
    pub max_elapsed_ms: u64,
    /// The header that makes a non-idempotent request safe to repeat.
    pub idempotency_key_header: String,
    /// Methods retried only when they carry that header, unchanged on every attempt.
    pub require_idempotency_key_for: Vec<String>,
}

impl Default for RetryConfig {
    /// The AWS SDK standard mode's shape (3 attempts, full jitter, 1 s base, 20 s cap), plus
    /// Retry-After (up to 60 s) and the idempotency rule.
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            base_delay_ms: 1_000,
            max_delay_ms: 20_000,
            jitter: Jitter::Full,
            retryable_statuses: RETRYABLE_STATUSES.to_vec(),
            retry_in_progress_conflicts: true,
            honor_retry_after: true,
            max_retry_after_ms: 60_000,
            max_elapsed_ms: 120_000,
            idempotency_key_header: "Idempotency-Key".to_owned(),
            require_idempotency_key_for: vec!["POST".to_owned(), "PATCH".to_owned()],
        }
    }
}

impl RetryConfig {
    /// The policy this configuration describes; errors name the field.
    pub fn to_policy(&self) -> Result<RetryPolicy, Error> {
        if self.max_attempts == 0 {
            return Err(Error::InvalidConfig(
                "`max_attempts` must be at least 1".to_owned(),
            ));
        }
        if self.base_delay_ms > self.max_delay_ms {
            return Err(Error::InvalidConfig(
                "`base_delay_ms` must not exceed `max_delay_ms`".to_owned(),
            ));
        }
        let backoff = Backoff::exponential(
            Duration::from_millis(self.base_delay_ms),
            Duration::from_millis(self.max_delay_ms),
        )
        .jitter(self.jitter);
        let policy = RetryPolicy::new(backoff)
            .max_attempts(self.max_attempts)
            .max_elapsed(Duration::from_millis(self.max_elapsed_ms));
        Ok(if self.honor_retry_after {
            policy.retry_after(RetryAfterBounds::new(
                Duration::ZERO,
                Duration::from_millis(self.max_retry_after_ms),
            ))
        } else {
            policy.ignore_retry_after()
        })
    }
}
