//! Time and sleeping, injected: tests run on a [`ManualClock`] that sleeps by moving itself
//! forward, so a retry schedule of minutes runs in microseconds and the same way every time.
//! These are the types of `tollgate-clock`, shared by every Tollgate crate.
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

#[cfg(feature = "tokio")]
pub use tollgate_clock::TokioSleeper;
pub use tollgate_clock::{BoxFuture, Clock, ManualClock, Sleeper, SystemClock, Timestamp};
