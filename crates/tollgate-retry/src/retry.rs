//! The retry driver: run an async operation until it succeeds, fails for good, or the policy,
//! the elapsed-time limit or the retry budget says stop.
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tollgate_retry::backoff::{Backoff, Jitter};
//! use tollgate_retry::clock::ManualClock;
//! use tollgate_retry::retry::{Attempt, Retrier, RetryPolicy};
//!
//! let clock = ManualClock::new(); // sleeping on it is instant, and measured
//! let policy = RetryPolicy::new(
//!     Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1)).jitter(Jitter::None),
//! )
//! .max_attempts(4);
//! let retrier = Retrier::new(policy).clock(Arc::new(clock.clone()), Arc::new(clock.clone()));
//!
//! // Fails twice with a retryable error, then succeeds.
//! let result: Result<&str, &str> = retrier
//!     .run(
//!         |attempt| async move { if attempt < 3 { Err("503") } else { Ok("paid") } },
//!         |result| match result {
//!             Err(_) => Attempt::retry(),
//!             Ok(_) => Attempt::Done,
//!         },
//!     )
//!     .await;
//! assert_eq!(result, Ok("paid"));
//! assert_eq!(clock.elapsed(), Duration::from_millis(100 + 200));
//! # });
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::{Backoff, Delays};
use crate::budget::{Cause, RetryBudget, RetryPermit};
use crate::clock::{Clock, Sleeper, Timestamp};
use crate::retry_after::RetryAfterBounds;

/// What to do with an attempt's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Return it: a success, or a failure another attempt cannot fix.
    Done,
    /// Try again.
    Retry {
        /// The server's `Retry-After`, if any (it replaces the computed delay when the policy
        /// honours it).
        after: Option<Duration>,
        /// What went wrong (a timeout costs a budget more).
        cause: Cause,
    },
}

impl Attempt {
    /// A retryable error without `Retry-After`.
    pub fn retry() -> Self {
        Attempt::Retry {
            after: None,
            cause: Cause::Error,
        }
    }
}

/// How many times, how long and how far apart to retry.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: Backoff,
    max_elapsed: Option<Duration>,
    retry_after: Option<RetryAfterBounds>,
    budget: Option<RetryBudget>,
}

impl RetryPolicy {
    /// Three attempts on `backoff`, honouring `Retry-After` up to 60 s, no time limit, no budget.
    pub fn new(backoff: Backoff) -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff,
            max_elapsed: None,
            retry_after: Some(RetryAfterBounds::default()),
            budget: None,
        }
    }

    /// Attempts in total, the first included (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Stop retrying when the next attempt would start more than `limit` after the first.
    pub fn max_elapsed(mut self, limit: Duration) -> Self {
        self.max_elapsed = Some(limit);
        self
    }

    /// Obey `Retry-After` within `bounds`, in place of the computed delay.
    pub fn retry_after(mut self, bounds: RetryAfterBounds) -> Self {
        self.retry_after = Some(bounds);
        self
    }

    /// Ignore `Retry-After`.
    pub fn ignore_retry_after(mut self) -> Self {
        self.retry_after = None;
        self
    }

    /// Draw every retry from a shared budget.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The attempt limit.
    pub fn attempt_limit(&self) -> u32 {
        self.max_attempts
    }

    /// The delay schedule.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }
}

/// Runs `operation` under `policy` on the system clock with tokio's sleep and random jitter:
/// shorthand for [`Retrier::new`]`(policy).run(operation, classify)`.
#[cfg(feature = "tokio")]
pub async fn retry<T, E, Op, Fut, C>(
    policy: RetryPolicy,
    operation: Op,
    classify: C,
) -> Result<T, E>
where
    Op: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    C: Fn(&Result<T, E>) -> Attempt,
{
    Retrier::new(policy).run(operation, classify).await
}

/// What [`Retrier::notify`]'s hook hears before each wait: which attempt failed, why, and how
/// long until the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retrying {
    /// The attempt that failed (1-based).
    pub attempt: u32,
    /// Why it is retried.
    pub cause: Cause,
    /// The wait before the next attempt (after jitter and `Retry-After`).
    pub delay: Duration,
}

type Notify = Arc<dyn Fn(&Retrying) + Send + Sync>;

/// Runs operations under a [`RetryPolicy`] on a clock and a sleeper.
#[derive(Clone)]
pub struct Retrier {
    policy: RetryPolicy,
    clock: Arc<dyn Clock>,
    sleeper: Arc<dyn Sleeper>,
    seed: Option<u64>,
    notify: Option<Notify>,
}

impl std::fmt::Debug for Retrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retrier")
            .field("policy", &self.policy)
            .field("seed", &self.seed)
            .field("notify", &self.notify.is_some())
            .finish_non_exhaustive()
    }
}

impl Retrier {
    /// A retrier on the system clock, sleeping with tokio, with random jitter.
    #[cfg(feature = "tokio")]
    pub fn new(policy: RetryPolicy) -> Self {
        Retrier {
            policy,
            clock: Arc::new(crate::clock::SystemClock::new()),
            sleeper: Arc::new(crate::clock::TokioSleeper),
            seed: None,
            notify: None,
        }
    }

    /// A retrier on `clock`, sleeping with `sleeper` (a [`ManualClock`](crate::clock::ManualClock)
    /// is both).
    pub fn with_clock(
        policy: RetryPolicy,
        clock: Arc<dyn Clock>,
        sleeper: Arc<dyn Sleeper>,
    ) -> Self {
        Retrier {
            policy,
            clock,
            sleeper,
            seed: None,
            notify: None,
        }
    }

    /// Replaces the clock and the sleeper.
    pub fn clock(mut self, clock: Arc<dyn Clock>, sleeper: Arc<dyn Sleeper>) -> Self {
        self.clock = clock;
        self.sleeper = sleeper;
        self
    }

    /// Calls `hook` before each wait for another attempt, on every call of this retrier: to
    /// count retries in metrics. To see each failure's error or status as well, use
    /// [`run_observed`](Self::run_observed).
    pub fn notify(mut self, hook: impl Fn(&Retrying) + Send + Sync + 'static) -> Self {
        self.notify = Some(Arc::new(hook));
        self
    }

    /// Fixes the jitter's randomness (tests, simulations).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Runs `operation` (given the 1-based attempt number) until `classify` says
    /// [`Attempt::Done`] or retrying must stop; returns the last attempt's result.
    pub async fn run<T, E, Op, Fut, C>(&self, operation: Op, classify: C) -> Result<T, E>
    where
        Op: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&Result<T, E>) -> Attempt,
    {
        self.run_observed(operation, classify, |_, _| {})
            .await
            .result
    }

    /// [`run`](Self::run), also calling `on_retry` with each failed attempt's result before
    /// waiting for the next one (to log the error or the status that caused the retry), and
    /// returning how many attempts were made.
    pub async fn run_observed<T, E, Op, Fut, C, O>(
        &self,
        mut operation: Op,
        classify: C,
        mut on_retry: O,
    ) -> Finished<T, E>
    where
        Op: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&Result<T, E>) -> Attempt,
        O: FnMut(&Retrying, &Result<T, E>),
    {
        let mut schedule = self.schedule();
        loop {
            let attempt = schedule.attempt();
            let result = operation(attempt).await;
            let retrying = match schedule.next(classify(&result), result.is_ok()) {
                Some(retrying) => retrying,
                None => {
                    return Finished {
                        result,
                        attempts: attempt,
                    };
                }
            };
            on_retry(&retrying, &result);
            self.sleeper.sleep(retrying.delay).await;
        }
    }

    /// The bookkeeping of one call's retries, for drivers of their own (such as a tower
    /// `Policy`): ask [`Schedule::next`] after each attempt, and wait what it says.
    pub fn schedule(&self) -> Schedule {
        self.schedule_since(self.clock.now())
    }

    /// A [`schedule`](Self::schedule) whose elapsed-time limit counts from `started` (when the
    /// first attempt was sent).
    pub fn schedule_since(&self, started: Timestamp) -> Schedule {
        Schedule {
            retrier: self.clone(),
            started,
            delays: self
                .policy
                .backoff
                .delays(self.seed.unwrap_or_else(|| fastrand::u64(..))),
            permit: None,
            attempt: 1,
        }
    }

    /// The time on this retrier's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Sleeps on this retrier's sleeper.
    pub fn sleep(&self, delay: Duration) -> crate::clock::BoxFuture {
        self.sleeper.sleep(delay)
    }
}

/// A finished run: the last attempt's result and how many attempts were made.
#[derive(Debug)]
#[non_exhaustive]
pub struct Finished<T, E> {
    /// The last attempt's result.
    pub result: Result<T, E>,
    /// Attempts made, the first included.
    pub attempts: u32,
}

/// How many attempts a call took, the first included: what retrying middleware leaves in a
/// response's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempts(pub u32);

/// One call's retry state: which attempt it is on, its delays, its budget permit. Made by
/// [`Retrier::schedule`].
#[derive(Debug)]
pub struct Schedule {
    retrier: Retrier,
    started: Timestamp,
    delays: Delays,
    permit: Option<RetryPermit>,
    attempt: u32,
}

impl Schedule {
    /// The attempt being made (1-based).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Decides after an attempt: `None` to stop (done, out of attempts, out of time or out of
    /// budget), or the wait before the next attempt (the retrier's `notify` hook has heard it).
    /// `succeeded` says whether the attempt succeeded, so that a budget refunds its permit.
    pub fn next(&mut self, verdict: Attempt, succeeded: bool) -> Option<Retrying> {
        let policy = &self.retrier.policy;
        let (after, cause) = match verdict {
            Attempt::Done => {
                if let (true, Some(budget)) = (succeeded, &policy.budget) {
                    budget.record_success(self.permit.take());
                }
                return None;
            }
            Attempt::Retry { after, cause } => (after, cause),
        };
        if let Some(budget) = &policy.budget {
            budget.record_failure();
        }
        if self.attempt >= policy.max_attempts {
            return None;
        }
        let computed = self.delays.next().unwrap_or(Duration::ZERO);
        let delay = match (after, policy.retry_after) {
            (Some(after), Some(bounds)) => bounds.clamp(after),
            _ => computed,
        };
        if let Some(limit) = policy.max_elapsed {
            let elapsed = self
                .retrier
                .clock
                .now()
                .saturating_duration_since(self.started);
            if elapsed + delay > limit {
                return None;
            }
        }
        if let Some(budget) = &policy.budget {
            match budget.try_acquire(cause) {
                Ok(permit) => self.permit = Some(permit),
                Err(_) => {
                    crate::telemetry::budget_exhausted(self.attempt, cause);
                    return None;
                }
            }
        }
        let retrying = Retrying {
            attempt: self.attempt,
            cause,
            delay,
        };
        crate::telemetry::retrying(self.attempt, delay, cause);
        if let Some(notify) = &self.retrier.notify {
            notify(&retrying);
        }
        self.attempt += 1;
        Some(retrying)
    }
}
