//! The store's state machine against a plain model, over random interleavings of claim,
//! complete, release (nothing happened / ambiguous) and time passing (lease expiry, TTL expiry,
//! takeover). Owners are tracked by the fence they hold, including zombies.

use std::time::Duration;

use proptest::prelude::*;
use tollgate_idempotency::Error;
use tollgate_idempotency::clock::ManualClock;
use tollgate_idempotency::store::{Claim, IdempotencyStore, Lease, Release, StoredResponse};

use crate::support::{OPTIONS, fingerprint, memory_store, response, scope};

const LEASE: u64 = 30;
const TTL: u64 = 24 * 3600;

#[derive(Clone, Debug)]
enum Op {
    Claim(bool),
    Complete(usize),
    Release(usize, bool),
    Advance(u64),
}

#[derive(Clone, Debug, PartialEq)]
enum ModelState {
    InProgress { fence: u64, lease_until: u64 },
    Completed(String),
}

#[derive(Clone, Debug)]
struct ModelRecord {
    body: bool,
    state: ModelState,
    expires_at: u64,
}

#[derive(Default)]
struct Model {
    record: Option<ModelRecord>,
    last_fence: u64,
}

impl Model {
    fn live(&mut self, now: u64) -> Option<&mut ModelRecord> {
        self.record.as_mut().filter(|r| r.expires_at > now)
    }

    fn claim(&mut self, now: u64, body: bool) -> Claim {
        let next = self.last_fence + 1;
        let Some(record) = self.live(now) else {
            self.last_fence = next;
            self.record = Some(ModelRecord {
                body,
                state: ModelState::InProgress {
                    fence: next,
                    lease_until: now + LEASE,
                },
                expires_at: now + TTL,
            });
            return Claim::Acquired(Lease {
                fence: next,
                resumed: false,
            });
        };
        if record.body != body {
            return Claim::Mismatch;
        }
        match record.state.clone() {
            ModelState::Completed(txn) => Claim::Completed(response(&txn)),
            ModelState::InProgress { lease_until, .. } if lease_until > now => Claim::InProgress {
                retry_after: Duration::from_secs(lease_until - now),
            },
            ModelState::InProgress { .. } => {
                record.state = ModelState::InProgress {
                    fence: next,
                    lease_until: now + LEASE,
                };
                self.last_fence = next;
                Claim::Acquired(Lease {
                    fence: next,
                    resumed: true,
                })
            }
        }
    }

    fn owns(&mut self, now: u64, fence: u64) -> bool {
        matches!(self.live(now), Some(r) if matches!(r.state, ModelState::InProgress { fence: f, .. } if f == fence))
    }

    fn complete(&mut self, now: u64, fence: u64) -> bool {
        if !self.owns(now, fence) {
            return false;
        }
        if let Some(r) = self.record.as_mut() {
            r.state = ModelState::Completed(format!("txn_{fence}"));
            r.expires_at = now + TTL;
        }
        true
    }

    fn release(&mut self, now: u64, fence: u64, ambiguous: bool) -> bool {
        if !self.owns(now, fence) {
            return false;
        }
        if ambiguous {
            if let Some(r) = self.record.as_mut() {
                r.state = ModelState::InProgress {
                    fence,
                    lease_until: now,
                };
            }
        } else {
            self.record = None;
        }
        true
    }
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::bool::weighted(0.85).prop_map(Op::Claim),
            3 => (0usize..6).prop_map(Op::Complete),
            2 => (0usize..6, any::<bool>()).prop_map(|(i, a)| Op::Release(i, a)),
            2 => prop_oneof![0u64..20, 25u64..40, Just(TTL)].prop_map(Op::Advance),
        ],
        1..80,
    )
}

/// A claim with its fence blanked: stores number fences their own way (a counter, a sequence,
/// server time); what must agree is the outcome, and that fences only grow.
fn shape(claim: &Claim) -> Claim {
    match claim {
        Claim::Acquired(lease) => Claim::Acquired(Lease { fence: 0, ..*lease }),
        // Results are named after the completing fence; they are compared through the mapping.
        Claim::Completed(stored) => Claim::Completed(StoredResponse {
            status: stored.status,
            headers: Vec::new(),
            body: bytes::Bytes::new(),
        }),
        other => other.clone(),
    }
}

/// Runs `ops` against `store` and the model side by side.
async fn run_model(
    store: &dyn IdempotencyStore,
    clock: &ManualClock,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    let scope = scope("alice", "model-key-0123456789");
    let bodies = [fingerprint(r#"{"a":1}"#), fingerprint(r#"{"a":2}"#)];
    // Every lease ever handed out, as (model fence, store fence): owners, and zombies.
    let mut fences: Vec<(u64, u64)> = Vec::new();
    for op in ops {
        let now = clock.elapsed().as_secs();
        match op {
            Op::Advance(secs) => clock.advance(Duration::from_secs(secs)),
            Op::Claim(first_body) => {
                let fp = &bodies[usize::from(!first_body)];
                let got = store.claim(&scope, fp, OPTIONS).await.expect("store");
                let expected = model.claim(now, first_body);
                prop_assert_eq!(shape(&got), shape(&expected));
                if let (Claim::Acquired(ours), Claim::Acquired(theirs)) = (&got, &expected) {
                    if let Some(&(_, last)) = fences.last() {
                        prop_assert!(ours.fence > last, "fences must grow");
                    }
                    fences.push((theirs.fence, ours.fence));
                }
                if let (Claim::Completed(ours), Claim::Completed(theirs)) = (&got, &expected) {
                    // The model names results by its own fence; map them to the store's.
                    let model_fence = theirs
                        .body
                        .strip_prefix(b"txn_".as_slice())
                        .map(|b| b.to_vec());
                    let store_fence = ours
                        .body
                        .strip_prefix(b"txn_".as_slice())
                        .map(|b| b.to_vec());
                    let pair = fences
                        .iter()
                        .find(|(m, _)| Some(m.to_string().into_bytes()) == model_fence);
                    prop_assert_eq!(pair.map(|(_, s)| s.to_string().into_bytes()), store_fence);
                }
            }
            Op::Complete(i) => {
                let Some(&(model_fence, store_fence)) = fences.get(i % fences.len().max(1)) else {
                    continue;
                };
                let got = store
                    .complete(
                        &scope,
                        store_fence,
                        &response(&format!("txn_{store_fence}")),
                        OPTIONS.ttl,
                    )
                    .await;
                let expected = model.complete(now, model_fence);
                prop_assert_eq!(got.is_ok(), expected, "complete at {}", now);
                if let Err(error) = got {
                    prop_assert!(matches!(error, Error::Fenced));
                }
            }
            Op::Release(i, ambiguous) => {
                let Some(&(model_fence, store_fence)) = fences.get(i % fences.len().max(1)) else {
                    continue;
                };
                let how = if ambiguous {
                    Release::Ambiguous
                } else {
                    Release::NothingHappened
                };
                let got = store.release(&scope, store_fence, how).await;
                prop_assert_eq!(got.is_ok(), model.release(now, model_fence, ambiguous));
            }
        }
    }
    Ok(())
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn memory_store_matches_the_model(ops in ops()) {
        let clock = ManualClock::new();
        let store = memory_store(&clock);
        block_on(run_model(&store, &clock, ops))?;
    }
}

#[cfg(feature = "postgres")]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn postgres_store_matches_the_model(ops in ops()) {
        use crate::support::pg;
        let Some((url, schema)) = pg::database("model::postgres_store_matches_the_model") else {
            return Ok(());
        };
        block_on(async {
            let clock = ManualClock::new();
            let store = pg::store(&url, &schema, Some(&clock)).await;
            let result = run_model(&store, &clock, ops).await;
            pg::drop_schema(&url, &schema).await;
            result
        })?;
    }
}

#[cfg(feature = "redis")]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn redis_store_matches_the_model(ops in ops()) {
        use crate::support::rd;
        let Some((url, prefix)) = rd::redis("model::redis_store_matches_the_model") else {
            return Ok(());
        };
        block_on(async {
            let clock = ManualClock::new();
            let store = rd::store(&url, &prefix, Some(&clock));
            let result = run_model(&store, &clock, ops).await;
            rd::drop_prefix(&url, &prefix).await;
            result
        })?;
    }
}
