//! [`ManualClock`]: time that moves only when a test says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::Clock;
use crate::sleep::{BoxFuture, Sleeper};
use crate::timestamp::{Timestamp, duration_to_micros};

/// Where [`ManualClock::new`] starts: 2023-11-14T22:13:20Z, an arbitrary but realistic time.
const DEFAULT_START: Timestamp = Timestamp::from_secs(1_700_000_000);

/// A clock that moves only when told to, or when something sleeps on it. Clones share time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    origin: Timestamp,
    micros: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock at an arbitrary, fixed time (the same on every run).
    pub fn new() -> Self {
        ManualClock::starting_at(DEFAULT_START)
    }

    /// A manual clock showing `start`.
    pub fn starting_at(start: Timestamp) -> Self {
        ManualClock {
            origin: start,
            micros: Arc::new(AtomicU64::new(start.as_micros())),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = duration_to_micros(by);
        let _ = self
            .micros
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(by))
            });
    }

    /// Sets the clock to `to` (which may be in the past, to test clock steps).
    pub fn set(&self, to: Timestamp) {
        self.micros.store(to.as_micros(), Ordering::SeqCst);
    }

    /// Time since the clock was created (zero if it was set before its start).
    pub fn elapsed(&self) -> Duration {
        self.now() - self.origin
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.micros.load(Ordering::SeqCst))
    }
}

impl Sleeper for ManualClock {
    /// Advances the clock by `duration` and completes at once.
    fn sleep(&self, duration: Duration) -> BoxFuture {
        self.advance(duration);
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_time() {
        let clock = ManualClock::starting_at(Timestamp::from_secs(10));
        let other = clock.clone();
        clock.advance(Duration::from_micros(7));
        assert_eq!(other.now(), Timestamp::from_micros(10_000_007));
        assert_eq!(other.elapsed(), Duration::from_micros(7));
        other.set(Timestamp::from_secs(1));
        assert_eq!(clock.now().as_secs_ceil(), 1);
        assert_eq!(clock.elapsed(), Duration::ZERO);
    }

    #[test]
    fn advancing_saturates() {
        let clock = ManualClock::new();
        clock.advance(Duration::MAX);
        assert_eq!(clock.now().as_micros(), u64::MAX);
    }

    #[tokio::test]
    async fn sleeping_moves_the_clock() {
        let clock = ManualClock::new();
        clock.sleep(Duration::from_secs(3)).await;
        assert_eq!(clock.elapsed(), Duration::from_secs(3));
    }
}
