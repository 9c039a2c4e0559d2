//! Retry budgets: a token bucket shared by every call, so that retries cannot multiply an
//! outage's load.
//!
//! Two rule sets, each as its reference defines it:
//! - [`RetryBudget::aws_standard`] (AWS SDKs' "standard" retry mode): 500 tokens; a retry costs 5
//!   (10 after a timeout) and is refused if the bucket cannot pay; a success refunds the retry's
//!   cost, or 1 token when the call succeeded first time.
//! - [`RetryBudget::grpc`] (gRPC retry throttling): `max_tokens` (10 by default); every failed
//!   attempt takes 1 token, every success adds `token_ratio` (0.1); retries are allowed only while
//!   more than half the bucket remains.
//!
//! Tokens are kept in thousandths, so gRPC's three-decimal ratios are exact; the count never
//! goes below zero or above the capacity.
//!
//! # Example
//!
//! ```
//! use tollgate_retry::budget::{Cause, RetryBudget};
//!
//! let budget = RetryBudget::aws_standard();
//! let permit = budget.try_acquire(Cause::Error)?; // 500 → 495
//! assert_eq!(budget.available_milli(), 495_000);
//! budget.record_success(Some(permit));            // the retry worked: 495 → 500
//! assert_eq!(budget.available_milli(), 500_000);
//!
//! let grpc = RetryBudget::grpc(10, 100);           // 10 tokens, ratio 0.100
//! for _ in 0..5 { grpc.record_failure(); }         // 10 → 5: no longer more than half
//! assert!(grpc.try_acquire(Cause::Error).is_err());
//! # Ok::<(), tollgate_retry::Error>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Error;

/// Why an attempt failed, for budgets that charge timeouts more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A retryable error or status.
    Error,
    /// The attempt timed out.
    Timeout,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rules {
    Quota {
        capacity: u64,
        retry_cost: u64,
        timeout_cost: u64,
        success_refund: u64,
    },
    Throttle {
        max_tokens: u64,
        token_ratio: u64,
    },
}

/// What a granted retry cost, refunded when the retried call succeeds (AWS rules).
#[derive(Debug)]
#[must_use = "hand the permit back with record_success when the retried call succeeds"]
pub struct RetryPermit {
    cost_milli: u64,
}

/// A shared retry budget. Clones share the bucket.
#[derive(Clone)]
pub struct RetryBudget {
    tokens_milli: Arc<AtomicU64>,
    rules: Rules,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("rules", &self.rules)
            .field("available_milli", &self.available_milli())
            .finish()
    }
}

impl RetryBudget {
    /// AWS standard mode: 500 tokens, retry cost 5, timeout cost 10, refund 1 on a first-time
    /// success.
    pub fn aws_standard() -> Self {
        RetryBudget::quota(500, 5, 10, 1)
    }

    /// A quota bucket with the AWS rules and your numbers.
    pub fn quota(capacity: u32, retry_cost: u32, timeout_cost: u32, success_refund: u32) -> Self {
        let capacity = u64::from(capacity) * 1000;
        RetryBudget {
            tokens_milli: Arc::new(AtomicU64::new(capacity)),
            rules: Rules::Quota {
                capacity,
                retry_cost: u64::from(retry_cost) * 1000,
                timeout_cost: u64::from(timeout_cost) * 1000,
                success_refund: u64::from(success_refund) * 1000,
            },
        }
    }

    /// gRPC retry throttling with `max_tokens` and a ratio in thousandths (100 = 0.1).
    pub fn grpc(max_tokens: u32, token_ratio_milli: u32) -> Self {
        let max = u64::from(max_tokens) * 1000;
        RetryBudget {
            tokens_milli: Arc::new(AtomicU64::new(max)),
            rules: Rules::Throttle {
                max_tokens: max,
                token_ratio: u64::from(token_ratio_milli),
            },
        }
    }

    /// Tokens left, in thousandths.
    pub fn available_milli(&self) -> u64 {
        self.tokens_milli.load(Ordering::Acquire)
    }

    fn capacity(&self) -> u64 {
        match self.rules {
            Rules::Quota { capacity, .. } => capacity,
            Rules::Throttle { max_tokens, .. } => max_tokens,
        }
    }

    /// Asks to retry after a failure of kind `cause`.
    pub fn try_acquire(&self, cause: Cause) -> Result<RetryPermit, Error> {
        match self.rules {
            Rules::Quota {
                retry_cost,
                timeout_cost,
                ..
            } => {
                let cost = if cause == Cause::Timeout {
                    timeout_cost
                } else {
                    retry_cost
                };
                self.tokens_milli
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(cost))
                    .map(|_| RetryPermit { cost_milli: cost })
                    .map_err(|_| Error::BudgetExhausted)
            }
            Rules::Throttle { max_tokens, .. } => {
                if self.available_milli() > max_tokens / 2 {
                    Ok(RetryPermit { cost_milli: 0 })
                } else {
                    Err(Error::BudgetExhausted)
                }
            }
        }
    }

    /// Records a failed attempt (gRPC rules take a token; AWS rules charge at `try_acquire`).
    pub fn record_failure(&self) {
        if let Rules::Throttle { .. } = self.rules {
            let _ = self
                .tokens_milli
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                    Some(t.saturating_sub(1000))
                });
        }
    }

    /// Records a successful call; `permit` is the last retry's permit, if the call was retried.
    pub fn record_success(&self, permit: Option<RetryPermit>) {
        let refund = match self.rules {
            Rules::Quota { success_refund, .. } => permit.map_or(success_refund, |p| p.cost_milli),
            Rules::Throttle { token_ratio, .. } => token_ratio,
        };
        let capacity = self.capacity();
        let _ = self
            .tokens_milli
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_add(refund).min(capacity))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_quota_runs_dry_and_timeouts_cost_more() {
        let budget = RetryBudget::quota(20, 5, 10, 1);
        let timeout = budget.try_acquire(Cause::Timeout).expect("20 ≥ 10");
        let _ = budget.try_acquire(Cause::Error).expect("10 ≥ 5");
        let _ = budget.try_acquire(Cause::Error).expect("5 ≥ 5");
        assert!(matches!(
            budget.try_acquire(Cause::Error),
            Err(Error::BudgetExhausted)
        ));
        budget.record_success(Some(timeout));
        assert_eq!(budget.available_milli(), 10_000);
        for _ in 0..100 {
            budget.record_success(None);
        }
        assert_eq!(budget.available_milli(), 20_000, "capped at capacity");
    }

    #[test]
    fn grpc_throttle_recovers_with_successes() {
        let budget = RetryBudget::grpc(10, 100);
        for _ in 0..20 {
            budget.record_failure();
        }
        assert_eq!(budget.available_milli(), 0, "never negative");
        assert!(budget.try_acquire(Cause::Error).is_err());
        for _ in 0..51 {
            budget.record_success(None);
        }
        // 5.1 tokens > 10 / 2.
        assert!(budget.try_acquire(Cause::Error).is_ok());
    }
}
