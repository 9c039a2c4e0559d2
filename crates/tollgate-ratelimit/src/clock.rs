//! Time sources: the limiter never reads the wall clock directly.
//!
//! Every decision takes its `now` from a [`Clock`]. Production code uses [`SystemClock`]; tests
//! use [`ManualClock`] and move time forward with [`ManualClock::advance`], so no test ever
//! sleeps to wait out a window. (The Redis backend uses the Redis server's `TIME` instead unless
//! a clock is injected for tests.) These are the types of `tollgate-clock`, shared by every
//! Tollgate crate: one clock can drive the limiter, the retry policy and the idempotency store.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tollgate_ratelimit::clock::{Clock, ManualClock, Timestamp};
//!
//! let clock = ManualClock::starting_at(Timestamp::from_secs(1_700_000_000));
//! clock.advance(Duration::from_millis(1500));
//! assert_eq!(clock.now().as_micros(), 1_700_000_001_500_000);
//! ```

pub use tollgate_clock::{Clock, ManualClock, SystemClock, Timestamp};

pub(crate) use tollgate_clock::duration_to_micros;
