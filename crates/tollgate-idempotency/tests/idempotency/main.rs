//! Integration tests of tollgate-idempotency: one conformance suite per store, a 100-task race
//! through the driver, and a property model of the store's state machine.

mod concurrency;
mod conformance;
mod model;
#[cfg(feature = "postgres")]
mod pg_only;
mod support;
