//! [`LiveDuration`]: a setting a reload replaces while requests read it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A duration read on every use and replaced by a reload (microseconds in an atomic: no lock
/// on the paths that read it).
#[derive(Debug)]
pub(crate) struct LiveDuration(AtomicU64);

impl LiveDuration {
    pub(crate) fn new(duration: Duration) -> Self {
        LiveDuration(AtomicU64::new(micros(duration)))
    }

    pub(crate) fn get(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Relaxed))
    }

    pub(crate) fn set(&self, duration: Duration) {
        self.0.store(micros(duration), Ordering::Relaxed);
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
