//! Time, injected: the memory store's leases and expiry and the driver's bounded wait read a
//! [`Clock`]; tests use a [`ManualClock`] (also a [`Sleeper`] that moves itself forward). These
//! are the types of `tollgate-clock`, shared by every Tollgate crate. The Redis and PostgreSQL
//! stores decide on their server's clock unless a test injects one.

pub use tollgate_clock::{Clock, ManualClock, Sleeper, SystemClock, Timestamp, TokioSleeper};
