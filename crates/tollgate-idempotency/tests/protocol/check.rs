//! Exhaustive checks of the protocol and of broken variants.

use std::time::Instant;

use stateright::{Checker, Model};

use crate::model::{Protocol, Variant};

/// Explores every reachable state; prints how many and how long it took.
fn explore(protocol: Protocol, label: &str) -> impl Checker<Protocol> {
    let started = Instant::now();
    let checker = protocol.checker().threads(2).spawn_bfs().join();
    eprintln!(
        "model {label}: {} states ({} unique), depth {}, explored in {:.2?}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    checker
}

#[test]
fn two_processes_keep_every_property_in_every_state() {
    let checker = explore(
        Protocol::new(Variant::IntentWithClaim, 2),
        "two processes, eight fences, eight faults",
    );
    assert!(checker.is_done(), "the whole space was explored");
    checker.assert_properties();
}

#[test]
fn three_processes_keep_every_property_in_every_state() {
    let mut protocol = Protocol::new(Variant::IntentWithClaim, 3);
    protocol.max_fences = 6;
    protocol.max_faults = 6;
    let checker = explore(protocol, "three processes, six fences, six faults");
    assert!(checker.is_done());
    checker.assert_properties();
}

/// Without the completion's fence check, an owner whose lease expired overwrites the record
/// the new owner completed.
#[test]
fn without_the_fence_check_a_stale_owner_writes() {
    let checker = explore(
        Protocol::small(Variant::NoFenceCheck),
        "broken: no fence check",
    );
    let path = checker.assert_any_discovery("a stale owner never writes");
    eprintln!("counterexample:\n{path}");
}

/// A resumed owner that charges a new payment instead of asking the processor about the
/// pending one charges twice.
#[test]
fn without_reconciliation_a_resumed_owner_charges_twice() {
    let checker = explore(
        Protocol::small(Variant::NoReconcile),
        "broken: no reconciliation",
    );
    let path = checker.assert_any_discovery("at most one charge per key");
    eprintln!("counterexample:\n{path}");
}

/// Where the claim and the pending payment are written apart, an owner whose lease expires
/// between the two (a stall longer than the lease) races the owner that took over: each
/// inserts its own payment and charges it. This is why the PostgreSQL path writes them in one
/// statement; the other stores have this window (see docs/reliability.md).
#[test]
fn an_intent_written_after_the_claim_can_charge_twice_after_a_stall() {
    let checker = explore(
        Protocol::small(Variant::IntentAfterClaim),
        "intent after the claim",
    );
    let path = checker.assert_any_discovery("at most one charge per key");
    eprintln!("counterexample:\n{path}");
    let actions = path.into_actions();
    assert!(
        actions.contains(&crate::model::Action::LeaseExpires),
        "it takes a lease expiring under its owner: {actions:?}"
    );
}
