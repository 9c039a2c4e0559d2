//! Integration tests of tollgate-idempotency: one conformance suite per store, a 100-task race
//! through the driver, a property model of the store's state machine, and property tests of
//! fingerprints.

mod concurrency;
mod conformance;
mod fingerprint;
mod memory_only;
mod model;
#[cfg(feature = "postgres")]
mod pg_only;
mod support;
