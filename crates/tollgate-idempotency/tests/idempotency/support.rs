use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use tollgate_idempotency::fingerprint::Fingerprint;
use tollgate_idempotency::memory::MemoryStore;
use tollgate_idempotency::store::{ClaimOptions, StoredResponse};
use tollgate_idempotency::{IdempotencyKey, Scope};
use tollgate_retry::clock::ManualClock;

pub(crate) const ROUTE: &str = "/api/v1/payments";

pub(crate) fn scope(user: &str, key: &str) -> Scope {
    Scope::new(
        user,
        &Method::POST,
        ROUTE,
        IdempotencyKey::parse(key).expect("valid key"),
    )
}

pub(crate) fn fingerprint(body: &str) -> Fingerprint {
    Fingerprint::of_json(&Method::POST, ROUTE, body.as_bytes()).expect("json")
}

pub(crate) fn response(body: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("location".to_owned(), format!("/api/v1/payments/{body}")),
        ],
        body: Bytes::from(body.to_owned()),
    }
}

pub(crate) const OPTIONS: ClaimOptions = ClaimOptions {
    lease: Duration::from_secs(30),
    ttl: Duration::from_secs(24 * 3600),
};

pub(crate) fn memory_store(clock: &ManualClock) -> MemoryStore {
    MemoryStore::with_clock(100_000, Arc::new(clock.clone()))
}
