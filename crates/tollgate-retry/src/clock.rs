//! Time and sleeping, injected: tests run on a [`ManualClock`] that sleeps by moving itself
//! forward, so a retry schedule of minutes runs in microseconds and the same way every time.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tollgate_retry::clock::{Clock, ManualClock, Sleeper};
//!
//! let clock = ManualClock::new();
//! let start = clock.now();
//! let _ready = clock.sleep(Duration::from_secs(30)); // time moves now; the future is ready
//! assert_eq!(clock.now() - start, Duration::from_secs(30));
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A boxed, sendable future: what [`Sleeper::sleep`] returns.
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A monotonic clock.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// Something that waits.
pub trait Sleeper: Send + Sync + fmt::Debug {
    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture;
}

/// [`Instant::now`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Sleeps with `tokio::time::sleep` (so `tokio::time::pause()` also works in tests).
#[cfg(feature = "tokio")]
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioSleeper;

#[cfg(feature = "tokio")]
impl Sleeper for TokioSleeper {
    fn sleep(&self, duration: Duration) -> BoxFuture {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that moves only when told to, or when something sleeps on it. Clones share time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    origin: Instant,
    elapsed_nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at an arbitrary origin.
    pub fn new() -> Self {
        ManualClock {
            origin: Instant::now(),
            elapsed_nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.elapsed_nanos.fetch_add(nanos, Ordering::SeqCst);
    }

    /// Time since the clock was created.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed_nanos.load(Ordering::SeqCst))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.origin + self.elapsed()
    }
}

impl Sleeper for ManualClock {
    /// Advances the clock by `duration` and completes at once.
    fn sleep(&self, duration: Duration) -> BoxFuture {
        self.advance(duration);
        Box::pin(std::future::ready(()))
    }
}
