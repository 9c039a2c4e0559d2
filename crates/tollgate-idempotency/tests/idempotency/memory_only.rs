//! Memory only: the claim of a key never seen, at once, for a hook that writes with it.

use std::sync::Arc;

use tollgate_idempotency::clock::ManualClock;
use tollgate_idempotency::memory::MemoryStore;
use tollgate_idempotency::store::{Claim, IdempotencyStore};

use crate::support::{OPTIONS, fingerprint, response, scope};

#[tokio::test]
async fn claim_if_absent_claims_only_a_key_without_a_live_record() {
    let clock = ManualClock::new();
    let store = MemoryStore::with_clock(16, Arc::new(clock.clone()));
    let s = scope("alice", "txn-key-memory-000001");
    let fp = fingerprint(r#"{"amount":"4.00"}"#);
    let lease = store
        .claim_if_absent(&s, &fp, OPTIONS)
        .expect("claimed")
        .expect("a fresh key");
    assert!(!lease.resumed);
    assert_eq!(
        store.claim_if_absent(&s, &fp, OPTIONS).expect("answered"),
        None
    );
    assert!(matches!(
        store.claim(&s, &fp, OPTIONS).await.expect("claim"),
        Claim::InProgress { .. }
    ));
    store
        .complete(&s, lease.fence, &response("txn_4"), OPTIONS.ttl)
        .await
        .expect("the lease completes");
    assert_eq!(
        store.claim_if_absent(&s, &fp, OPTIONS).expect("answered"),
        None
    );
    // Expired: the key is free again, as for a claim.
    clock.advance(OPTIONS.ttl);
    assert!(
        store
            .claim_if_absent(&s, &fp, OPTIONS)
            .expect("claimed")
            .is_some()
    );
}
