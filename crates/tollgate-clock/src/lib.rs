//! The one notion of time the Tollgate crates share.
//!
//! Every decision that depends on time — a rate-limit window, a retry delay, a circuit breaker's
//! open period, an idempotency lease — reads it from a [`Clock`] passed in, never from the
//! operating system directly. Production code uses [`SystemClock`]; tests use a [`ManualClock`]
//! and move it forward, so no test sleeps to wait out a window and every run is the same.
//!
//! - [`Timestamp`]: whole microseconds since the Unix epoch. Monotonic when it comes from
//!   [`SystemClock`], and exact in the IEEE doubles of Redis Lua scripts for centuries.
//! - [`Clock`]: something that tells the time.
//! - [`Sleeper`]: something that waits; a [`ManualClock`] is one that sleeps by moving itself
//!   forward, and [`TokioSleeper`] (feature `tokio`) waits for real.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tollgate_clock::{Clock, ManualClock, Sleeper, Timestamp};
//!
//! let clock = ManualClock::starting_at(Timestamp::from_secs(1_700_000_000));
//! let start = clock.now();
//! clock.advance(Duration::from_millis(1500));
//! assert_eq!(clock.now().as_micros(), 1_700_000_001_500_000);
//!
//! // Sleeping on a manual clock moves it and completes at once.
//! let _ready = clock.sleep(Duration::from_secs(30));
//! assert_eq!(clock.now() - start, Duration::from_millis(31_500));
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

mod clock;
mod manual;
mod sleep;
mod timestamp;

pub use clock::{Clock, SystemClock};
pub use manual::ManualClock;
#[cfg(feature = "tokio")]
pub use sleep::TokioSleeper;
pub use sleep::{BoxFuture, Sleeper};
pub use timestamp::{Timestamp, duration_to_micros};

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
