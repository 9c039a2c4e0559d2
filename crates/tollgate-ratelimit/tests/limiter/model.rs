//! Property tests: each algorithm, driven through the memory backend over random schedules,
//! against an independent reference model of what the policy promises.
//!
//! Every step compares admitted / remaining / reset / retry-after exactly with the model, checks
//! that `peek` predicts `check` and consumes nothing, and checks the algorithm's bound over the
//! admitted history.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tollgate_ratelimit::clock::ManualClock;
use tollgate_ratelimit::{Algorithm, Decision, MemoryLimiter, Policy, PolicyKey, Scope};

use crate::support::START;

/// One second, in µs: the window of every model below.
const W: u64 = 1_000_000;

#[derive(Clone, Copy, Debug)]
enum Op {
    Advance(u64),
    Check(u64),
    Peek(u64),
    Refund(u64),
}

fn ops(max_cost: u64) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => (0..W / 3).prop_map(Op::Advance),
        1 => (0..3 * W).prop_map(Op::Advance),
        6 => (1..=max_cost).prop_map(Op::Check),
        1 => (1..=max_cost).prop_map(Op::Peek),
        1 => (1..=max_cost).prop_map(Op::Refund),
    ];
    prop::collection::vec(op, 1..120)
}

/// What a model predicts for a request of some cost at some instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Outcome {
    allowed: bool,
    remaining: u64,
    reset_after: u64,
    retry_after: Option<u64>,
}

trait Model {
    /// The outcome at `now` without consuming (the remaining count is the current one).
    fn peek(&self, now: u64, cost: u64) -> Outcome;
    fn consume(&mut self, now: u64, cost: u64);
    fn refund(&mut self, now: u64, cost: u64);
    /// Whether a unit admitted at `t` can still be refunded at `now`.
    fn refundable(&self, _t: u64, _now: u64) -> bool {
        true
    }
}

fn outcome(decision: &Decision<'_>) -> Outcome {
    let p = &decision.policies()[0];
    let us = |d: Duration| u64::try_from(d.as_micros()).expect("small");
    Outcome {
        allowed: decision.is_allowed(),
        remaining: p.remaining(),
        reset_after: us(p.reset_after()),
        retry_after: p.retry_after().map(us),
    }
}

/// Runs `ops` against the memory backend and `model`; returns the admitted `(time, cost)` pairs.
fn run(
    algorithm: Algorithm,
    ops: &[Op],
    model: &mut dyn Model,
) -> Result<Vec<(u64, u64)>, TestCaseError> {
    let clock = ManualClock::starting_at(START);
    let limiter: MemoryLimiter<ManualClock> = MemoryLimiter::builder().clock(clock.clone()).build();
    let policy = Arc::new(Policy::new("p", Scope::Global, algorithm).expect("valid"));
    let capacity = policy.capacity();
    let keys = [PolicyKey::new(policy, "")];
    let mut admitted = Vec::new();
    for &op in ops {
        let now = clock.now_micros();
        match op {
            Op::Advance(us) => clock.advance(Duration::from_micros(us)),
            Op::Peek(cost) | Op::Check(cost) if cost > capacity => {
                prop_assert!(limiter.check_now(&keys, cost).is_err());
            }
            Op::Peek(cost) => {
                let peeked = outcome(&limiter.peek_now(&keys, cost).expect("valid"));
                prop_assert_eq!(peeked, model.peek(now, cost), "peek({}) at {}", cost, now);
                let again = outcome(&limiter.peek_now(&keys, cost).expect("valid"));
                prop_assert_eq!(again, peeked, "peek consumed something");
            }
            Op::Check(cost) => {
                let predicted = model.peek(now, cost);
                let before = outcome(&limiter.peek_now(&keys, cost).expect("valid"));
                let decision = outcome(&limiter.check_now(&keys, cost).expect("valid"));
                prop_assert_eq!(decision.allowed, before.allowed, "peek mispredicted check");
                prop_assert_eq!(
                    decision.allowed,
                    predicted.allowed,
                    "check({}) at {}",
                    cost,
                    now
                );
                prop_assert_eq!(
                    decision.retry_after,
                    predicted.retry_after,
                    "retry_after at {}",
                    now
                );
                if decision.allowed {
                    model.consume(now, cost);
                    admitted.push((now, cost));
                    let after = model.peek(now, 1);
                    prop_assert_eq!(decision.remaining, after.remaining, "remaining after check");
                    prop_assert_eq!(decision.reset_after, after.reset_after, "reset after check");
                } else {
                    prop_assert_eq!(decision, predicted, "a denial reports the current state");
                    let unchanged = outcome(&limiter.peek_now(&keys, cost).expect("valid"));
                    prop_assert_eq!(unchanged, before, "a denial consumed something");
                }
            }
            Op::Refund(cost) if cost > capacity => {}
            Op::Refund(cost) => {
                limiter.refund_now(&keys, cost).expect("valid");
                model.refund(now, cost);
                // Refunds give back the newest refundable units; keep the history honest for the
                // bound checks.
                let mut left = cost;
                for entry in admitted.iter_mut().rev() {
                    if left == 0 || !model.refundable(entry.0, now) {
                        break;
                    }
                    let taken = left.min(entry.1);
                    entry.1 -= taken;
                    left -= taken;
                }
            }
        }
    }
    Ok(admitted)
}

trait NowMicros {
    fn now_micros(&self) -> u64;
}

impl NowMicros for ManualClock {
    fn now_micros(&self) -> u64 {
        use tollgate_ratelimit::clock::Clock;
        self.now().as_micros()
    }
}

/// Sum of admitted costs in the half-open window `(end - W, end]`.
fn in_window(admitted: &[(u64, u64)], end: u64) -> u64 {
    admitted
        .iter()
        .filter(|&&(t, _)| t + W > end && t <= end)
        .map(|&(_, c)| c)
        .sum()
}

// ---------------------------------------------------------------- sliding log: exact

#[derive(Default)]
struct LogModel {
    limit: u64,
    entries: Vec<(u64, u64)>,
}

impl LogModel {
    fn live(&self, now: u64) -> impl Iterator<Item = &(u64, u64)> {
        self.entries
            .iter()
            .filter(move |&&(t, c)| t + W > now && c > 0)
    }
}

impl Model for LogModel {
    fn peek(&self, now: u64, cost: u64) -> Outcome {
        let used: u64 = self.live(now).map(|e| e.1).sum();
        let allowed = used + cost <= self.limit;
        // The first expiry instant after which enough has left the window.
        let retry_after = (!allowed).then(|| {
            let mut left = used;
            self.live(now)
                .find_map(|&(t, c)| {
                    left -= c;
                    (left + cost <= self.limit).then_some(t + W - now)
                })
                .unwrap_or(W)
        });
        Outcome {
            allowed,
            remaining: self.limit.saturating_sub(used),
            reset_after: self.live(now).last().map_or(0, |&(t, _)| t + W - now),
            retry_after,
        }
    }

    fn consume(&mut self, now: u64, cost: u64) {
        self.entries.push((now, cost));
    }

    fn refundable(&self, t: u64, now: u64) -> bool {
        t + W > now
    }

    fn refund(&mut self, now: u64, mut cost: u64) {
        for entry in self.entries.iter_mut().rev() {
            if entry.0 + W <= now || cost == 0 {
                break;
            }
            let take = cost.min(entry.1);
            entry.1 -= take;
            cost -= take;
        }
    }
}

// ---------------------------------------------------------------- GCRA: a continuous bucket

/// A token bucket measured in µs of credit: full at `tolerance`, refilling 1 per µs, a token
/// costing `interval`. Written as a bucket, not as GCRA, to be an independent statement.
struct BucketModel {
    interval: u64,
    tolerance: u64,
    credit: u64,
    at: u64,
}

impl BucketModel {
    fn credit_at(&self, now: u64) -> u64 {
        (self.credit + (now - self.at)).min(self.tolerance)
    }
}

impl Model for BucketModel {
    fn peek(&self, now: u64, cost: u64) -> Outcome {
        let credit = self.credit_at(now);
        let need = cost * self.interval;
        Outcome {
            allowed: credit >= need,
            remaining: credit / self.interval,
            reset_after: self.tolerance - credit,
            retry_after: (credit < need).then(|| need - credit),
        }
    }

    fn consume(&mut self, now: u64, cost: u64) {
        self.credit = self.credit_at(now) - cost * self.interval;
        self.at = now;
    }

    fn refund(&mut self, now: u64, cost: u64) {
        self.credit = (self.credit_at(now) + cost * self.interval).min(self.tolerance);
        self.at = now;
    }
}

// ---------------------------------------------------------------- sliding window counter

/// Admitted cost per aligned window index; the estimate from its definition, in exact u128.
#[derive(Default)]
struct WindowModel {
    limit: u64,
    counts: BTreeMap<u64, u64>,
}

impl WindowModel {
    /// `estimate × W` at `now`.
    fn weighted(&self, now: u64) -> u128 {
        let index = now / W;
        let e = now % W;
        let count = |i: u64| u128::from(self.counts.get(&i).copied().unwrap_or(0));
        let previous = if index == 0 { 0 } else { count(index - 1) };
        previous * u128::from(W - e) + count(index) * u128::from(W)
    }

    fn admits(&self, now: u64, cost: u64) -> bool {
        self.weighted(now) + u128::from(cost * W) <= u128::from(self.limit * W)
    }
}

impl Model for WindowModel {
    fn peek(&self, now: u64, cost: u64) -> Outcome {
        let allowed = self.admits(now, cost);
        // The estimate never grows while nothing is admitted, so the first instant that admits
        // can be found by bisection over the next two windows.
        let retry_after = (!allowed).then(|| {
            let (mut lo, mut hi) = (0, 2 * W);
            while hi - lo > 1 {
                let mid = (lo + hi) / 2;
                if self.admits(now + mid, cost) {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            hi
        });
        let index = now / W;
        let e = now % W;
        let current = self.counts.get(&index).copied().unwrap_or(0);
        let previous = if index == 0 {
            0
        } else {
            self.counts.get(&(index - 1)).copied().unwrap_or(0)
        };
        let reset_after = if current > 0 {
            2 * W - e
        } else if previous > 0 {
            W - e
        } else {
            0
        };
        let free = u128::from(self.limit * W).saturating_sub(self.weighted(now));
        Outcome {
            allowed,
            remaining: u64::try_from(free / u128::from(W)).expect("small"),
            reset_after,
            retry_after,
        }
    }

    fn consume(&mut self, now: u64, cost: u64) {
        *self.counts.entry(now / W).or_default() += cost;
    }

    fn refundable(&self, t: u64, now: u64) -> bool {
        t / W + 1 >= now / W
    }

    fn refund(&mut self, now: u64, cost: u64) {
        let index = now / W;
        let current = self.counts.entry(index).or_default();
        let from_current = cost.min(*current);
        *current -= from_current;
        if index > 0 {
            let previous = self.counts.entry(index - 1).or_default();
            *previous = previous.saturating_sub(cost - from_current);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sliding_log_matches_model_and_is_exact(limit in 1u64..8, ops in ops(3)) {
        let mut model = LogModel { limit, ..LogModel::default() };
        let admitted = run(Algorithm::sliding_log(limit, Duration::from_micros(W)), &ops, &mut model)?;
        for &(t, _) in &admitted {
            prop_assert!(in_window(&admitted, t) <= limit, "more than {} in a window ending at {}", limit, t);
        }
    }

    #[test]
    fn gcra_matches_a_token_bucket_exactly(rate in 1u64..6, burst in 1u64..6, ops in ops(3)) {
        let interval = W / rate;
        let mut model = BucketModel {
            interval,
            tolerance: burst * interval,
            credit: burst * interval,
            at: START.as_micros(),
        };
        run(Algorithm::token_bucket(rate, Duration::from_micros(W), burst), &ops, &mut model)?;
    }

    #[test]
    fn sliding_window_matches_model_within_its_bound(limit in 1u64..8, ops in ops(3)) {
        let mut model = WindowModel { limit, ..WindowModel::default() };
        let admitted = run(Algorithm::sliding_window(limit, Duration::from_micros(W)), &ops, &mut model)?;
        let mut per_window: BTreeMap<u64, u64> = BTreeMap::new();
        for &(t, c) in &admitted {
            *per_window.entry(t / W).or_default() += c;
            prop_assert!(in_window(&admitted, t) < 2 * limit, "the < 2L bound broke at {}", t);
        }
        for (index, count) in per_window {
            prop_assert!(count <= limit, "aligned window {} admitted {}", index, count);
        }
    }
}
