//! The store's state machine against a plain model, over random interleavings of claim,
//! complete, release (nothing happened / ambiguous) and time passing (lease expiry, TTL expiry,
//! takeover). Owners are tracked by the fence they hold, including zombies.

use std::time::Duration;

use proptest::prelude::*;
use tollgate_idempotency::store::{Claim, IdempotencyStore, Lease, Release};
use tollgate_idempotency::Error;
use tollgate_retry::clock::ManualClock;

use crate::support::{fingerprint, memory_store, response, scope, OPTIONS};

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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn memory_store_matches_the_model(ops in ops()) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(async {
            let clock = ManualClock::new();
            let store = memory_store(&clock);
            let mut model = Model::default();
            let scope = scope("alice", "model-key-0123456789");
            let bodies = [fingerprint(r#"{"a":1}"#), fingerprint(r#"{"a":2}"#)];
            // Every fence ever handed out: owners, and zombies once taken over.
            let mut fences: Vec<u64> = Vec::new();
            for op in ops {
                let now = clock.elapsed().as_secs();
                match op {
                    Op::Advance(secs) => clock.advance(Duration::from_secs(secs)),
                    Op::Claim(first_body) => {
                        let fp = &bodies[usize::from(!first_body)];
                        let got = store.claim(&scope, fp, OPTIONS).await.expect("store");
                        let expected = model.claim(now, first_body);
                        prop_assert_eq!(&got, &expected);
                        if let Claim::Acquired(lease) = got {
                            fences.push(lease.fence);
                        }
                    }
                    Op::Complete(i) => {
                        let Some(&fence) = fences.get(i % fences.len().max(1)) else { continue };
                        let got = store.complete(&scope, fence, &response(&format!("txn_{fence}")), OPTIONS.ttl).await;
                        let expected = model.complete(now, fence);
                        prop_assert_eq!(got.is_ok(), expected, "complete({}) at {}", fence, now);
                        if let Err(error) = got {
                            prop_assert!(matches!(error, Error::Fenced));
                        }
                    }
                    Op::Release(i, ambiguous) => {
                        let Some(&fence) = fences.get(i % fences.len().max(1)) else { continue };
                        let how = if ambiguous { Release::Ambiguous } else { Release::NothingHappened };
                        let got = store.release(&scope, fence, how).await;
                        prop_assert_eq!(got.is_ok(), model.release(now, fence, ambiguous));
                    }
                }
            }
            Ok(())
        })?;
    }
}
