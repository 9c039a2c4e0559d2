//! The model's traces run against the real memory store: every claim, completion and release
//! the model makes must get, from `MemoryStore` on a manual clock, the answer the model says.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use stateright::{Checker, Model};
use tollgate_idempotency::clock::ManualClock;
use tollgate_idempotency::fingerprint::Fingerprint;
use tollgate_idempotency::memory::MemoryStore;
use tollgate_idempotency::store::{Claim, ClaimOptions, IdempotencyStore, Release, StoredResponse};
use tollgate_idempotency::{Error, IdempotencyKey, Scope};

use crate::model::{Action, Fence, Proc, Protocol, Record, State, Txn, Variant, proc_fence};

const OPTIONS: ClaimOptions =
    ClaimOptions::new(Duration::from_secs(30), Duration::from_secs(24 * 3600));

fn answer(txn: Txn) -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: Vec::new(),
        body: Bytes::from(format!("txn_{txn}")),
    }
}

/// The real store beside the model, and the real fence of each model fence.
struct Real {
    store: MemoryStore,
    clock: ManualClock,
    scope: Scope,
    fingerprint: Fingerprint,
    fences: HashMap<Fence, u64>,
}

impl Real {
    fn new() -> Self {
        let clock = ManualClock::new();
        let key = IdempotencyKey::parse("order-model-check-0001").expect("a key");
        Real {
            store: MemoryStore::with_clock(16, Arc::new(clock.clone())),
            clock,
            scope: Scope::new("alice", &Method::POST, "/api/v1/payments", key),
            fingerprint: Fingerprint::of_json(&Method::POST, "/api/v1/payments", b"{}")
                .expect("a fingerprint"),
            fences: HashMap::new(),
        }
    }

    /// Runs `action` on the store (where it touches the store) and checks the store's answer
    /// against the model's states before and after it.
    async fn step(&mut self, before: &State, action: Action, after: &State) {
        match action {
            Action::Claim(p) => self.claim(before, after, p).await,
            Action::Finish(p) | Action::FinishAnswerLost(p) => {
                let Proc::Charged { fence, txn } = before.procs[p] else {
                    unreachable!("finish from {:?}", before.procs[p])
                };
                let real = self.fences[&fence];
                let result = self
                    .store
                    .complete(&self.scope, real, &answer(txn), OPTIONS.ttl)
                    .await;
                self.expect_owner(before, fence, result, action);
            }
            Action::ChargeAnswerLost(p) | Action::ChargeFailed(p) => {
                let fence = proc_fence(&before.procs[p]).expect("a working process");
                let real = self.fences[&fence];
                let result = self
                    .store
                    .release(&self.scope, real, Release::Ambiguous)
                    .await;
                self.expect_owner(before, fence, result, action);
            }
            Action::LeaseExpires => self.clock.advance(OPTIONS.lease + Duration::from_millis(1)),
            Action::RecordIntent(_) | Action::Lookup(_) | Action::Charge(_) | Action::Crash(_) => {}
        }
    }

    async fn claim(&mut self, before: &State, after: &State, p: usize) {
        let claim = self
            .store
            .claim(&self.scope, &self.fingerprint, OPTIONS)
            .await
            .expect("the memory store answers");
        match (before.record, claim) {
            (Record::Absent, Claim::Acquired(lease)) if !lease.resumed => {
                self.fences.insert(before.next_fence, lease.fence);
            }
            (Record::InProgress { live: false, .. }, Claim::Acquired(lease)) if lease.resumed => {
                let model = proc_fence(&after.procs[p]).expect("the new owner");
                assert!(
                    self.fences.values().all(|&f| f < lease.fence),
                    "a takeover's fence is larger than every earlier one"
                );
                self.fences.insert(model, lease.fence);
            }
            (Record::InProgress { live: true, .. }, Claim::InProgress { .. }) => {}
            (Record::Completed { txn }, Claim::Completed(stored)) => {
                assert_eq!(stored, answer(txn), "the replay is the stored answer");
            }
            (record, claim) => panic!("model {record:?}, store {claim:?}"),
        }
    }

    fn expect_owner(
        &self,
        before: &State,
        fence: Fence,
        result: Result<(), Error>,
        action: Action,
    ) {
        let owner = matches!(before.record, Record::InProgress { fence: f, .. } if f == fence);
        match result {
            Ok(()) => assert!(owner, "{action:?}: the store let fence {fence} write"),
            Err(Error::Fenced) => assert!(!owner, "{action:?}: the store fenced the owner"),
            Err(error) => panic!("{action:?}: {error}"),
        }
    }
}

/// Drives the store along `actions` from the model's initial state.
async fn replay(protocol: &Protocol, actions: &[Action]) {
    let mut real = Real::new();
    let mut state = protocol.init_states().remove(0);
    for &action in actions {
        let after = protocol
            .next_state(&state, action)
            .unwrap_or_else(|| panic!("{action:?} is not enabled"));
        real.step(&state, action, &after).await;
        state = after;
    }
}

/// A few thousand random walks through the model, each replayed on the store.
#[tokio::test]
async fn the_memory_store_answers_every_step_as_the_model_does() {
    let protocol = Protocol::new(Variant::IntentWithClaim, 2);
    let mut rng = fastrand::Rng::with_seed(0x7011_6a7e);
    let mut steps = 0;
    for _ in 0..3_000 {
        let mut state = protocol.init_states().remove(0);
        let mut walk = Vec::new();
        for _ in 0..40 {
            let mut actions = Vec::new();
            protocol.actions(&state, &mut actions);
            if actions.is_empty() {
                break;
            }
            let action = actions[rng.usize(..actions.len())];
            state = protocol.next_state(&state, action).expect("enabled");
            walk.push(action);
        }
        steps += walk.len();
        replay(&protocol, &walk).await;
    }
    eprintln!("replayed 3 000 model traces ({steps} steps) on the memory store");
}

/// The checker's own examples (a takeover that completes, a replay) and counterexamples of
/// the broken variants, replayed on the store: the store's answers agree with the model on
/// them too (the bugs are in the protocol's other steps, not in the store).
#[tokio::test]
async fn the_checkers_paths_replay_on_the_memory_store() {
    for (variant, property) in [
        (
            Variant::IntentWithClaim,
            "a resumed owner completes the key",
        ),
        (Variant::IntentWithClaim, "a replay answers a retry"),
        (Variant::IntentAfterClaim, "at most one charge per key"),
        (Variant::NoReconcile, "at most one charge per key"),
    ] {
        let protocol = Protocol::small(variant);
        let checker = protocol.clone().checker().spawn_bfs().join();
        let path = checker
            .discovery(property)
            .unwrap_or_else(|| panic!("{variant:?}: no path for {property:?}"));
        replay(&protocol, &path.into_actions()).await;
    }
}
