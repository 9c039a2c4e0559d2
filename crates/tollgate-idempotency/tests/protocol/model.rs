//! The exactly-once protocol of a payment with an idempotency key, as a state machine that
//! `stateright` explores exhaustively.
//!
//! One key; `processes` server processes that each take the key's requests one at a time (a
//! client's retry or duplicate can arrive at any of them at any moment); a store holding the
//! key's record with a lease on the store's own clock and fences; a ledger holding the key's
//! payment rows; a processor that charges once per reference. Transitions carry the names of
//! the code they stand for: `claim` (`IdempotencyStore::claim`, on PostgreSQL written with the
//! pending row by the `ClaimHook`), `record_intent` (`Ledger::insert_pending` /
//! `find_by_key`), `lookup` and `charge` (`PaymentProcessor`), `finish` (`Ledger::finish`, the
//! fenced completion), `release_ambiguous` (`Release::Ambiguous` after a lost answer). Faults:
//! a process crash at any step, a lease expiring while its owner still runs, a lost answer
//! from the processor (before or after it charged) and from the store's completion.

use stateright::{Model, Property};

/// Fences are small numbers here: the store's sequence, bounded so the space is finite.
pub(crate) type Fence = u8;
/// A payment's transaction id: the reference the processor deduplicates on.
pub(crate) type Txn = u8;

/// The key's idempotency record.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Record {
    Absent,
    /// Owned by `fence`; `live` until the lease expires or is released as ambiguous.
    InProgress {
        fence: Fence,
        live: bool,
    },
    /// The stored answer: the payment `txn`, succeeded.
    Completed {
        txn: Txn,
    },
}

/// Where one process is in handling a request for the key.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Proc {
    Idle,
    /// Claimed; the intent is not written yet (a store that cannot write it with the claim).
    Claimed {
        fence: Fence,
        resumed: bool,
    },
    /// Resumed and found the key's pending payment: ask the processor what became of it.
    Reconcile {
        fence: Fence,
        txn: Txn,
    },
    /// The pending payment `txn` is recorded: charge it.
    Intent {
        fence: Fence,
        txn: Txn,
    },
    /// The processor charged `txn`: record the result.
    Charged {
        fence: Fence,
        txn: Txn,
    },
}

/// What the processes can do, and what can happen to them.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Action {
    /// A request for the key arrives at process `p`, which claims it.
    Claim(usize),
    /// `p` writes its intent: a resumed owner finds the key's payment, a new one inserts it.
    RecordIntent(usize),
    /// `p` asks the processor about a pending payment it found.
    Lookup(usize),
    /// `p` charges; the processor answers.
    Charge(usize),
    /// `p` charges; the processor charged but the answer is lost (`p` releases as ambiguous).
    ChargeAnswerLost(usize),
    /// `p` calls the processor, which fails before charging (`p` releases as ambiguous).
    ChargeFailed(usize),
    /// `p` completes the record with its fence and answers.
    Finish(usize),
    /// `p` completes the record, but the store's answer is lost: the client gets no answer.
    FinishAnswerLost(usize),
    /// Process `p` crashes; its lease stays until it expires.
    Crash(usize),
    /// The record's lease expires (its owner may still be running).
    LeaseExpires,
}

/// The whole system.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct State {
    pub(crate) record: Record,
    pub(crate) next_fence: Fence,
    /// The key's payment rows, oldest first (`find_by_key` reads the newest).
    pub(crate) payments: Vec<(Txn, bool)>,
    pub(crate) next_txn: Txn,
    /// References the processor charged (it never charges one twice).
    pub(crate) charged: Vec<Txn>,
    pub(crate) procs: Vec<Proc>,
    /// The first answer a client was given for the key, and whether a different one followed.
    pub(crate) answered: Option<Txn>,
    pub(crate) answered_differently: bool,
    /// A completion or a payment row was written by a fence that no longer owned the record.
    pub(crate) stale_write: bool,
    /// Faults injected so far (crashes, lost answers, failures, leases expiring under a live
    /// owner).
    pub(crate) faults: u8,
}

/// The protocol's variants: the code's, and deliberately broken ones the checker must catch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Variant {
    /// As on PostgreSQL: a fresh key's claim and its pending payment commit together.
    IntentWithClaim,
    /// As with stores that cannot write the intent with the claim: claim, then insert.
    IntentAfterClaim,
    /// `IntentWithClaim` with the completion's fence check removed.
    NoFenceCheck,
    /// `IntentWithClaim` where a resumed owner charges a new payment instead of reconciling.
    NoReconcile,
}

/// The model: a variant, how many processes, and the bounds that keep it finite.
#[derive(Clone, Debug)]
pub(crate) struct Protocol {
    pub(crate) variant: Variant,
    pub(crate) processes: usize,
    /// Fences issued at most (each takeover issues one).
    pub(crate) max_fences: Fence,
    /// Faults injected at most.
    pub(crate) max_faults: u8,
}

impl Protocol {
    pub(crate) fn new(variant: Variant, processes: usize) -> Self {
        Protocol {
            variant,
            processes,
            max_fences: 8,
            max_faults: 8,
        }
    }

    /// Tighter bounds: enough for the counterexamples of the broken variants, which the checker
    /// finds within three fences and three faults.
    pub(crate) fn small(variant: Variant) -> Self {
        Protocol {
            max_fences: 3,
            max_faults: 3,
            ..Protocol::new(variant, 2)
        }
    }

    fn fault_allowed(&self, state: &State) -> bool {
        state.faults < self.max_faults
    }

    /// The owner of the record is `fence`.
    fn owns(state: &State, fence: Fence) -> bool {
        matches!(state.record, Record::InProgress { fence: f, .. } if f == fence)
    }
}

impl State {
    fn answer(&mut self, txn: Txn) {
        match self.answered {
            None => self.answered = Some(txn),
            Some(first) if first != txn => self.answered_differently = true,
            Some(_) => {}
        }
    }

    fn new_payment(&mut self) -> Txn {
        let txn = self.next_txn;
        self.next_txn += 1;
        self.payments.push((txn, false));
        txn
    }

    fn charge(&mut self, txn: Txn) {
        if !self.charged.contains(&txn) {
            self.charged.push(txn);
        }
    }

    /// `Release::Ambiguous` by `fence`: ends the lease if `fence` still owns the record.
    fn release_ambiguous(&mut self, fence: Fence) {
        if let Record::InProgress { fence: f, live } = &mut self.record
            && *f == fence
        {
            *live = false;
        }
    }
}

impl Model for Protocol {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            record: Record::Absent,
            next_fence: 1,
            payments: Vec::new(),
            next_txn: 1,
            charged: Vec::new(),
            procs: vec![Proc::Idle; self.processes],
            answered: None,
            answered_differently: false,
            stale_write: false,
            faults: 0,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        let fault = self.fault_allowed(state);
        for (p, proc) in state.procs.iter().enumerate() {
            match proc {
                Proc::Idle => {
                    let takeover = matches!(state.record, Record::InProgress { live: false, .. })
                        || state.record == Record::Absent;
                    if !takeover || state.next_fence <= self.max_fences {
                        actions.push(Action::Claim(p));
                    }
                }
                Proc::Claimed { .. } => actions.push(Action::RecordIntent(p)),
                Proc::Reconcile { .. } => actions.push(Action::Lookup(p)),
                Proc::Intent { .. } => {
                    actions.push(Action::Charge(p));
                    if fault {
                        actions.push(Action::ChargeAnswerLost(p));
                        actions.push(Action::ChargeFailed(p));
                    }
                }
                Proc::Charged { .. } => {
                    actions.push(Action::Finish(p));
                    if fault {
                        actions.push(Action::FinishAnswerLost(p));
                    }
                }
            }
            if fault && *proc != Proc::Idle {
                actions.push(Action::Crash(p));
            }
        }
        if let Record::InProgress { fence, live: true } = state.record {
            // Expiry under a live owner is a fault (a stall); after a crash it is time passing.
            let owner_running = state.procs.iter().any(|p| proc_fence(p) == Some(fence));
            if !owner_running || fault {
                actions.push(Action::LeaseExpires);
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Claim(p) => self.claim(&mut state, p),
            Action::RecordIntent(p) => self.record_intent(&mut state, p),
            Action::Lookup(p) => {
                let Proc::Reconcile { fence, txn } = state.procs[p] else {
                    return None;
                };
                state.procs[p] = if state.charged.contains(&txn) {
                    Proc::Charged { fence, txn }
                } else {
                    Proc::Intent { fence, txn }
                };
            }
            Action::Charge(p) | Action::ChargeAnswerLost(p) | Action::ChargeFailed(p) => {
                let Proc::Intent { fence, txn } = state.procs[p] else {
                    return None;
                };
                if action != Action::ChargeFailed(p) {
                    state.charge(txn);
                }
                if action == Action::Charge(p) {
                    state.procs[p] = Proc::Charged { fence, txn };
                } else {
                    state.faults += 1;
                    state.release_ambiguous(fence);
                    state.procs[p] = Proc::Idle;
                }
            }
            Action::Finish(p) | Action::FinishAnswerLost(p) => {
                let Proc::Charged { fence, txn } = state.procs[p] else {
                    return None;
                };
                self.finish(&mut state, fence, txn, action == Action::Finish(p));
                if action != Action::Finish(p) {
                    state.faults += 1;
                }
                state.procs[p] = Proc::Idle;
            }
            Action::Crash(p) => {
                state.faults += 1;
                state.procs[p] = Proc::Idle;
            }
            Action::LeaseExpires => {
                let Record::InProgress { fence, live: true } = state.record else {
                    return None;
                };
                if state.procs.iter().any(|p| proc_fence(p) == Some(fence)) {
                    state.faults += 1;
                }
                state.record = Record::InProgress { fence, live: false };
            }
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("at most one charge per key", one_charge),
            Property::always("every answer is the one replayed", one_answer),
            Property::always("a stale owner never writes", no_stale_write),
            Property::always("progress once faults stop", progress),
            Property::sometimes("a resumed owner completes the key", resumed_completes),
            Property::sometimes("a replay answers a retry", replayed),
        ]
    }
}

fn one_charge(_: &Protocol, state: &State) -> bool {
    state.charged.len() <= 1
}

fn one_answer(_: &Protocol, state: &State) -> bool {
    !state.answered_differently
}

fn no_stale_write(_: &Protocol, state: &State) -> bool {
    !state.stale_write
}

fn progress(protocol: &Protocol, state: &State) -> bool {
    protocol.completes_without_faults(state)
}

fn resumed_completes(_: &Protocol, state: &State) -> bool {
    matches!(state.record, Record::Completed { .. }) && state.next_fence > 2
}

fn replayed(_: &Protocol, state: &State) -> bool {
    state.answered.is_some()
}

/// The fence a process works under, if it works.
pub(crate) fn proc_fence(proc: &Proc) -> Option<Fence> {
    match *proc {
        Proc::Idle => None,
        Proc::Claimed { fence, .. }
        | Proc::Reconcile { fence, .. }
        | Proc::Intent { fence, .. }
        | Proc::Charged { fence, .. } => Some(fence),
    }
}

impl Protocol {
    /// `IdempotencyStore::claim`: a fresh claim (with the pending payment, where the variant
    /// writes them together), a takeover of an expired or released lease, a 409 while the
    /// lease is live, or a replay of the stored answer.
    fn claim(&self, state: &mut State, p: usize) {
        match state.record {
            Record::Absent => {
                let fence = state.next_fence;
                state.next_fence += 1;
                state.record = Record::InProgress { fence, live: true };
                state.procs[p] = if self.variant == Variant::IntentAfterClaim {
                    Proc::Claimed {
                        fence,
                        resumed: false,
                    }
                } else {
                    let txn = state.new_payment();
                    Proc::Intent { fence, txn }
                };
            }
            Record::InProgress { live: true, .. } => {} // 409: the client retries later
            Record::InProgress { live: false, .. } => {
                let fence = state.next_fence;
                state.next_fence += 1;
                state.record = Record::InProgress { fence, live: true };
                state.procs[p] = Proc::Claimed {
                    fence,
                    resumed: true,
                };
            }
            Record::Completed { txn } => state.answer(txn),
        }
    }

    /// `Ledger::find_by_key` for a resumed owner (reconcile what an earlier owner recorded),
    /// `Ledger::insert_pending` otherwise. Neither is fenced.
    fn record_intent(&self, state: &mut State, p: usize) {
        let Proc::Claimed { fence, resumed } = state.procs[p] else {
            return;
        };
        let newest = state.payments.last().copied();
        state.procs[p] = match newest {
            Some((txn, true)) if resumed => Proc::Charged { fence, txn },
            Some((txn, false)) if resumed && self.variant != Variant::NoReconcile => {
                Proc::Reconcile { fence, txn }
            }
            _ => {
                // Unfenced: an owner whose lease was taken over still inserts.
                if !Protocol::owns(state, fence) {
                    state.stale_write = true;
                }
                let txn = state.new_payment();
                Proc::Intent { fence, txn }
            }
        };
    }

    /// `Ledger::finish`: the completion, the payment's final status and the audit event, all
    /// only if `fence` still owns the record.
    fn finish(&self, state: &mut State, fence: Fence, txn: Txn, answered: bool) {
        let owner = Protocol::owns(state, fence);
        if !owner && self.variant != Variant::NoFenceCheck {
            return; // fenced: nothing written, the client gets 409
        }
        if !owner {
            state.stale_write = true;
        }
        state.record = Record::Completed { txn };
        if let Some(row) = state.payments.iter_mut().find(|(t, _)| *t == txn) {
            row.1 = true;
        }
        if answered {
            state.answer(txn);
        }
    }

    /// From `state`, with no more faults: every running process finishes its request, the
    /// lease (if any is left) expires, and one more request completes the key.
    pub(crate) fn completes_without_faults(&self, state: &State) -> bool {
        let mut state = state.clone();
        let calm = Protocol {
            max_faults: 0,
            max_fences: Fence::MAX - 1,
            ..self.clone()
        };
        state.faults = 0;
        for _ in 0..64 {
            if matches!(state.record, Record::Completed { .. })
                && state.procs.iter().all(|p| *p == Proc::Idle)
            {
                return true;
            }
            let mut actions = Vec::new();
            calm.actions(&state, &mut actions);
            // Running processes first, then time, then a new request on process 0.
            let next = actions
                .iter()
                .find(|a| !matches!(a, Action::Claim(_) | Action::LeaseExpires))
                .or_else(|| actions.iter().find(|a| **a == Action::LeaseExpires))
                .or_else(|| actions.iter().find(|a| matches!(a, Action::Claim(_))))
                .copied();
            let Some(next) = next else { return false };
            match calm.next_state(&state, next) {
                Some(after) => state = after,
                None => return false,
            }
        }
        false
    }
}
