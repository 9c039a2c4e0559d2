//! What the in-process and the process-level server tests share: the users' keys, unique names
//! and a payment body.

use std::sync::atomic::{AtomicU32, Ordering};

/// Keys of the three users every test app and test server knows.
pub(crate) const ALICE: &str = "alice-test-key-0001";
pub(crate) const BOB: &str = "bob-test-key-0002";
pub(crate) const CAROL: &str = "carol-test-key-0003";

/// A name no other test (or test run) uses: for Redis prefixes, schemas and keys.
pub(crate) fn unique(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{tag}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// A payment body.
pub(crate) fn payment(amount: &str, method: &str) -> String {
    format!(
        r#"{{"amount": {amount}, "currency": "USD", "description": "test", "payment_method": "{method}", "metadata": {{"order_id": "ord_1"}}}}"#
    )
}
