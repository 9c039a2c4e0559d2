//! One suite, every store. Each scenario takes a store and the manual clock it runs on.

use std::time::Duration;

use tollgate_idempotency::Error;
use tollgate_idempotency::clock::ManualClock;
use tollgate_idempotency::store::{Claim, IdempotencyStore, Lease, Release};

use crate::support::{OPTIONS, fingerprint, response, scope};

const KEY: &str = "order-7c1f0e9a2b4d4e11";
const BODY: &str = r#"{"amount":"10.00","currency":"USD"}"#;

async fn acquire(store: &dyn IdempotencyStore, user: &str) -> Lease {
    match store
        .claim(&scope(user, KEY), &fingerprint(BODY), OPTIONS)
        .await
        .expect("store")
    {
        Claim::Acquired(lease) => lease,
        other => panic!("expected to acquire, got {other:?}"),
    }
}

pub(crate) async fn completed_requests_replay(store: &dyn IdempotencyStore, _clock: &ManualClock) {
    let lease = acquire(store, "alice").await;
    assert!(!lease.resumed);
    store
        .complete(
            &scope("alice", KEY),
            lease.fence,
            &response("txn_1"),
            OPTIONS.ttl,
        )
        .await
        .expect("owner completes");
    let again = store
        .claim(&scope("alice", KEY), &fingerprint(BODY), OPTIONS)
        .await
        .expect("store");
    assert_eq!(again, Claim::Completed(response("txn_1")));
    // Key order and whitespace do not change the request.
    let reordered = fingerprint(r#"{ "currency": "USD", "amount": "10.00" }"#);
    let again = store
        .claim(&scope("alice", KEY), &reordered, OPTIONS)
        .await
        .expect("store");
    assert_eq!(again, Claim::Completed(response("txn_1")));
}

pub(crate) async fn a_different_request_is_a_mismatch(
    store: &dyn IdempotencyStore,
    _clock: &ManualClock,
) {
    let _lease = acquire(store, "alice").await;
    let other = fingerprint(r#"{"amount":"10.01","currency":"USD"}"#);
    let claim = store
        .claim(&scope("alice", KEY), &other, OPTIONS)
        .await
        .expect("store");
    assert_eq!(claim, Claim::Mismatch);
}

pub(crate) async fn scopes_are_isolated(store: &dyn IdempotencyStore, _clock: &ManualClock) {
    let alice = acquire(store, "alice").await;
    let bob = acquire(store, "bob").await;
    store
        .complete(
            &scope("bob", KEY),
            bob.fence,
            &response("txn_b"),
            OPTIONS.ttl,
        )
        .await
        .expect("bob");
    let claim = store
        .claim(&scope("alice", KEY), &fingerprint(BODY), OPTIONS)
        .await
        .expect("store");
    assert!(
        matches!(claim, Claim::InProgress { .. }),
        "bob's result is not alice's: {claim:?}"
    );
    store
        .complete(
            &scope("alice", KEY),
            alice.fence,
            &response("txn_a"),
            OPTIONS.ttl,
        )
        .await
        .expect("alice");
}

pub(crate) async fn duplicates_wait_while_the_lease_lives(
    store: &dyn IdempotencyStore,
    clock: &ManualClock,
) {
    let _lease = acquire(store, "alice").await;
    clock.advance(Duration::from_secs(10));
    let claim = store
        .claim(&scope("alice", KEY), &fingerprint(BODY), OPTIONS)
        .await
        .expect("store");
    assert_eq!(
        claim,
        Claim::InProgress {
            retry_after: Duration::from_secs(20)
        }
    );
}

pub(crate) async fn records_expire_after_the_ttl(
    store: &dyn IdempotencyStore,
    clock: &ManualClock,
) {
    let lease = acquire(store, "alice").await;
    store
        .complete(
            &scope("alice", KEY),
            lease.fence,
            &response("txn_1"),
            OPTIONS.ttl,
        )
        .await
        .expect("complete");
    clock.advance(OPTIONS.ttl - Duration::from_secs(1));
    assert!(matches!(
        store
            .claim(&scope("alice", KEY), &fingerprint(BODY), OPTIONS)
            .await
            .expect("store"),
        Claim::Completed(_)
    ));
    clock.advance(Duration::from_secs(1));
    // Expired reads as absent, before any cleanup ran; even a different body is accepted now.
    let other = fingerprint(r#"{"amount":"1.00","currency":"EUR"}"#);
    let claim = store
        .claim(&scope("alice", KEY), &other, OPTIONS)
        .await
        .expect("store");
    assert!(
        matches!(claim, Claim::Acquired(Lease { resumed: false, .. })),
        "{claim:?}"
    );
}

pub(crate) async fn a_zombie_owner_cannot_overwrite_the_new_owner(
    store: &dyn IdempotencyStore,
    clock: &ManualClock,
) {
    let zombie = acquire(store, "alice").await;
    clock.advance(OPTIONS.lease);
    let successor = acquire(store, "alice").await;
    assert!(successor.resumed, "a takeover resumes");
    assert!(successor.fence > zombie.fence);
    let late = store
        .complete(
            &scope("alice", KEY),
            zombie.fence,
            &response("txn_zombie"),
            OPTIONS.ttl,
        )
        .await;
    assert!(matches!(late, Err(Error::Fenced)), "{late:?}");
    assert!(matches!(
        store
            .release(&scope("alice", KEY), zombie.fence, Release::NothingHappened)
            .await,
        Err(Error::Fenced)
    ));
    store
        .complete(
            &scope("alice", KEY),
            successor.fence,
            &response("txn_new"),
            OPTIONS.ttl,
        )
        .await
        .expect("the new owner completes");
    let claim = store
        .claim(&scope("alice", KEY), &fingerprint(BODY), OPTIONS)
        .await
        .expect("store");
    assert_eq!(claim, Claim::Completed(response("txn_new")));
}

pub(crate) async fn an_ambiguous_failure_is_resumed_not_restarted(
    store: &dyn IdempotencyStore,
    _clock: &ManualClock,
) {
    let first = acquire(store, "alice").await;
    store
        .release(&scope("alice", KEY), first.fence, Release::Ambiguous)
        .await
        .expect("release");
    let retry = acquire(store, "alice").await;
    assert!(
        retry.resumed,
        "the retry knows the charge may have happened"
    );
    assert!(retry.fence > first.fence);
    // Releasing with nothing done forgets the record entirely.
    store
        .release(&scope("alice", KEY), retry.fence, Release::NothingHappened)
        .await
        .expect("release");
    let fresh = acquire(store, "alice").await;
    assert!(!fresh.resumed);
}

pub(crate) async fn cleanup_removes_only_expired_records(
    store: &dyn IdempotencyStore,
    clock: &ManualClock,
) {
    let old = acquire(store, "old-user").await;
    store
        .complete(
            &scope("old-user", KEY),
            old.fence,
            &response("txn_old"),
            OPTIONS.ttl,
        )
        .await
        .expect("complete");
    clock.advance(OPTIONS.ttl);
    let _new = acquire(store, "new-user").await;
    // Stores that delete expired records themselves (Redis `PX`) have nothing to clean up; the
    // others delete exactly the expired one. Either way the live record stays.
    let deleted = store.cleanup(100).await.expect("cleanup");
    assert!(deleted <= 1, "deleted {deleted}");
    assert_eq!(store.cleanup(100).await.expect("cleanup"), 0);
    let live = store
        .claim(&scope("new-user", KEY), &fingerprint(BODY), OPTIONS)
        .await
        .expect("store");
    assert!(matches!(live, Claim::InProgress { .. }), "{live:?}");
}

/// A record read as absent would be claimed afresh — and the payment made again — under an
/// owner still at work: no record expires while its lease is held, on a fresh claim with a TTL
/// shorter than the lease, nor after a takeover late in the TTL.
pub(crate) async fn a_record_never_expires_while_its_lease_is_held(
    store: &dyn IdempotencyStore,
    clock: &ManualClock,
) {
    let short_ttl = tollgate_idempotency::store::ClaimOptions::new(
        Duration::from_secs(10),
        Duration::from_secs(2),
    );
    let claim = |user: &'static str| async move {
        store
            .claim(&scope(user, KEY), &fingerprint(BODY), short_ttl)
            .await
            .expect("store")
    };
    assert!(matches!(claim("alice").await, Claim::Acquired(_)));
    clock.advance(Duration::from_secs(5));
    assert!(
        matches!(claim("alice").await, Claim::InProgress { .. }),
        "past the TTL, inside the lease"
    );

    let late = tollgate_idempotency::store::ClaimOptions::new(
        Duration::from_secs(4),
        Duration::from_secs(10),
    );
    let claim = |user: &'static str| async move {
        store
            .claim(&scope(user, KEY), &fingerprint(BODY), late)
            .await
            .expect("store")
    };
    assert!(matches!(claim("bob").await, Claim::Acquired(_)));
    clock.advance(Duration::from_secs(8));
    let takeover = claim("bob").await;
    assert!(
        matches!(takeover, Claim::Acquired(Lease { resumed: true, .. })),
        "{takeover:?}"
    );
    clock.advance(Duration::from_secs(3));
    let duplicate = claim("bob").await;
    assert!(
        matches!(duplicate, Claim::InProgress { .. }),
        "past the TTL, inside the new owner's lease: {duplicate:?}"
    );
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let clock = tollgate_idempotency::clock::ManualClock::new();
                    let store = crate::support::memory_store(&clock);
                    super::$scenario(&store, &clock).await;
                }
            )*
        }

        #[cfg(feature = "redis")]
        mod redis {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let name = concat!("conformance::redis::", stringify!($scenario));
                    let Some((url, prefix)) = crate::support::rd::redis(name) else { return };
                    let clock = tollgate_idempotency::clock::ManualClock::new();
                    let store = crate::support::rd::store(&url, &prefix, Some(&clock));
                    super::$scenario(&store, &clock).await;
                    crate::support::rd::drop_prefix(&url, &prefix).await;
                }
            )*
        }

        #[cfg(feature = "redis")]
        mod redis_multiplexed {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let name = concat!("conformance::redis_multiplexed::", stringify!($scenario));
                    let Some((url, prefix)) = crate::support::rd::redis(name) else { return };
                    let clock = tollgate_idempotency::clock::ManualClock::new();
                    let store = crate::support::rd::multiplexed_store(&url, &prefix, Some(&clock)).await;
                    super::$scenario(&store, &clock).await;
                    crate::support::rd::drop_prefix(&url, &prefix).await;
                }
            )*
        }

        #[cfg(feature = "cluster")]
        mod redis_cluster {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let name = concat!("conformance::redis_cluster::", stringify!($scenario));
                    let Some((urls, prefix)) = crate::support::rd::cluster(name) else { return };
                    let clock = tollgate_idempotency::clock::ManualClock::new();
                    let store = crate::support::rd::cluster_store(&urls, &prefix, Some(&clock)).await;
                    super::$scenario(&store, &clock).await;
                    crate::support::rd::drop_cluster_prefix(&urls, &prefix).await;
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let name = concat!("conformance::postgres::", stringify!($scenario));
                    let Some((url, schema)) = crate::support::pg::database(name) else { return };
                    let clock = tollgate_idempotency::clock::ManualClock::new();
                    let store = crate::support::pg::store(&url, &schema, Some(&clock)).await;
                    super::$scenario(&store, &clock).await;
                    crate::support::pg::drop_schema(&url, &schema).await;
                }
            )*
        }
    };
}

conformance!(
    completed_requests_replay,
    a_different_request_is_a_mismatch,
    scopes_are_isolated,
    duplicates_wait_while_the_lease_lives,
    records_expire_after_the_ttl,
    a_zombie_owner_cannot_overwrite_the_new_owner,
    an_ambiguous_failure_is_resumed_not_restarted,
    cleanup_removes_only_expired_records,
    a_record_never_expires_while_its_lease_is_held,
);
