//! [`until_ready`]: wait for quota instead of failing, for a client or a worker that should
//! slow down (governor's `until_ready`).
//!
//! A denied check sleeps for the decision's `Retry-After` plus a random jitter and tries
//! again, so waiters that were refused together do not all come back in the same instant; a
//! denial consumes nothing, so waiting is free for everyone else. It gives up after
//! `max_wait`, answering the last denial. Time comes from the [`Sleeper`] passed in: a
//! [`ManualClock`](crate::clock::ManualClock) makes a test of it instant.
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tollgate_ratelimit::clock::ManualClock;
//! use tollgate_ratelimit::wait::{until_ready, Patience};
//! use tollgate_ratelimit::{Algorithm, MemoryLimiter, Policy, PolicyKey, Scope};
//!
//! let clock = ManualClock::new();
//! let limiter = MemoryLimiter::builder().clock(clock.clone()).build();
//! let policy = Arc::new(Policy::new("exports", Scope::User,
//!     Algorithm::token_bucket(1, Duration::from_secs(1), 1))?);
//! let keys = [PolicyKey::new(policy, "alice")];
//! let patience = Patience::new(&clock).jitter(Duration::from_millis(100));
//! for _ in 0..3 {
//!     // The second and third wait about a second each, on the manual clock: no real sleep.
//!     assert!(until_ready(&limiter, &keys, 1, &patience).await?.is_allowed());
//! }
//! assert!(clock.elapsed() >= Duration::from_secs(2));
//! # Ok::<(), tollgate_ratelimit::Error>(())
//! # }).unwrap();
//! ```

use std::time::Duration;

use tollgate_clock::Sleeper;

use crate::{Decision, Error, PolicyKey, RateLimiter};

/// How [`until_ready`] waits.
#[derive(Clone, Copy, Debug)]
pub struct Patience<'s> {
    sleeper: &'s dyn Sleeper,
    jitter: Duration,
    max_wait: Duration,
}

impl<'s> Patience<'s> {
    /// Waits with `sleeper`, no jitter, at most a minute.
    pub fn new(sleeper: &'s dyn Sleeper) -> Self {
        Patience {
            sleeper,
            jitter: Duration::ZERO,
            max_wait: Duration::from_secs(60),
        }
    }

    /// Adds a random delay of up to `jitter` to every wait.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Gives up once the waits would pass `max_wait` in all.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }
}

/// Checks `keys` for `cost` until they admit it (and it is consumed), waiting out each denial;
/// the last denial once `patience` runs out. Errors are the limiter's, at once.
pub async fn until_ready<'k, L: RateLimiter + ?Sized>(
    limiter: &L,
    keys: &'k [PolicyKey],
    cost: u64,
    patience: &Patience<'_>,
) -> Result<Decision<'k>, Error> {
    let mut waited = Duration::ZERO;
    loop {
        let decision = limiter.check(keys, cost).await?;
        let Some(after) = decision.retry_after() else {
            return Ok(decision);
        };
        let jitter = Duration::from_micros(fastrand::u64(
            ..=u64::try_from(patience.jitter.as_micros()).unwrap_or(u64::MAX),
        ));
        let wait = after.saturating_add(jitter);
        if waited.saturating_add(wait) > patience.max_wait {
            return Ok(decision);
        }
        patience.sleeper.sleep(wait).await;
        waited += wait;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;
    use crate::{Algorithm, MemoryLimiter, Policy, Scope};

    #[tokio::test]
    async fn waits_out_denials_within_its_patience() {
        let clock = ManualClock::new();
        let limiter = MemoryLimiter::builder().clock(clock.clone()).build();
        let policy = Arc::new(
            Policy::new(
                "p",
                Scope::Global,
                Algorithm::sliding_log(2, Duration::from_secs(10)),
            )
            .expect("valid"),
        );
        let keys = [PolicyKey::new(policy, "")];
        let patient = Patience::new(&clock).jitter(Duration::from_millis(50));
        for _ in 0..2 {
            assert!(
                until_ready(&limiter, &keys, 1, &patient)
                    .await
                    .expect("ok")
                    .is_allowed()
            );
        }
        assert_eq!(
            clock.elapsed(),
            Duration::ZERO,
            "no wait while there is quota"
        );
        assert!(
            until_ready(&limiter, &keys, 1, &patient)
                .await
                .expect("ok")
                .is_allowed()
        );
        let waited = clock.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited <= Duration::from_millis(10_050),
            "the oldest request leaves the log after 10 s, plus at most the jitter: {waited:?}"
        );
        // The two requests of t = 0 have left; one more fills the log again.
        assert!(
            until_ready(&limiter, &keys, 1, &patient)
                .await
                .expect("ok")
                .is_allowed()
        );
        assert_eq!(clock.elapsed(), waited);
        let hasty = Patience::new(&clock).max_wait(Duration::from_millis(10));
        let denied = until_ready(&limiter, &keys, 1, &hasty).await.expect("ok");
        assert!(
            !denied.is_allowed(),
            "gave up rather than wait past max_wait"
        );
        let impossible = until_ready(&limiter, &keys, 3, &patient).await;
        assert!(
            impossible.is_err(),
            "a cost over the capacity fails at once"
        );
    }
}
