//! `payment_success_rate` over the last five minutes: processed payments counted in ten-second
//! buckets, so the rate follows what happens now instead of averaging the process's life.

use std::time::Instant;

use parking_lot::Mutex;

/// Seconds per bucket.
const BUCKET_SECONDS: u64 = 10;
/// Buckets in the window: 30 × 10 s = 5 minutes.
const BUCKETS: usize = 30;

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// Which ten seconds since the window's start this bucket counts (0 = never used).
    slot: u64,
    processed: u64,
    succeeded: u64,
}

/// Processed and succeeded payments of the last [`WINDOW_SECONDS`].
#[derive(Debug)]
pub(crate) struct SuccessWindow {
    started: Instant,
    buckets: Mutex<[Bucket; BUCKETS]>,
}

impl SuccessWindow {
    pub(crate) fn new() -> Self {
        SuccessWindow {
            started: Instant::now(),
            buckets: Mutex::new([Bucket::default(); BUCKETS]),
        }
    }

    fn slot_now(&self) -> u64 {
        // Slots start at 1, so a bucket never used (slot 0) is never current.
        self.started.elapsed().as_secs() / BUCKET_SECONDS + 1
    }

    /// Counts a processed payment; returns the rate with it.
    pub(crate) fn record(&self, succeeded: bool) -> f64 {
        self.record_at(self.slot_now(), succeeded)
    }

    /// The percentage that succeeded in the window: 100 when none was processed in it (no
    /// evidence of failure, and a fresh or idle server must not look broken).
    pub(crate) fn rate(&self) -> f64 {
        self.rate_at(self.slot_now())
    }

    fn record_at(&self, slot: u64, succeeded: bool) -> f64 {
        let mut buckets = self.buckets.lock();
        let bucket = &mut buckets[(slot % BUCKETS as u64) as usize];
        if bucket.slot != slot {
            *bucket = Bucket {
                slot,
                ..Bucket::default()
            };
        }
        bucket.processed += 1;
        bucket.succeeded += u64::from(succeeded);
        rate_of(&buckets, slot)
    }

    fn rate_at(&self, slot: u64) -> f64 {
        rate_of(&self.buckets.lock(), slot)
    }
}

fn rate_of(buckets: &[Bucket; BUCKETS], slot: u64) -> f64 {
    let oldest = slot.saturating_sub(BUCKETS as u64 - 1);
    let (processed, succeeded) = buckets
        .iter()
        .filter(|b| b.slot >= oldest && b.slot <= slot && b.slot != 0)
        .fold((0, 0), |(p, s), b| (p + b.processed, s + b.succeeded));
    if processed == 0 {
        100.0
    } else {
        100.0 * succeeded as f64 / processed as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_follows_the_last_five_minutes() {
        let window = SuccessWindow::new();
        assert_eq!(window.rate_at(1), 100.0, "nothing processed yet");
        // An hour of successes, then a bad five minutes.
        for slot in 1..=360 {
            window.record_at(slot, true);
        }
        for slot in 361..=390 {
            window.record_at(slot, false);
            window.record_at(slot, slot % 2 == 0);
        }
        assert_eq!(window.rate_at(390), 25.0, "only the bad five minutes count");
        // Five quiet minutes later the failures have left the window.
        assert_eq!(window.rate_at(420), 100.0);
        window.record_at(421, false);
        assert_eq!(window.rate_at(421), 0.0);
    }
}
