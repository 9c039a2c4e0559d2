use proptest::prelude::*;
use tollgate_retry::budget::{Cause, RetryBudget};

#[derive(Clone, Debug)]
enum Op {
    Acquire(bool),
    Failure,
    Success(bool),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            any::<bool>().prop_map(Op::Acquire),
            Just(Op::Failure),
            any::<bool>().prop_map(Op::Success),
        ],
        0..300,
    )
}

proptest! {
    /// AWS rules against a plain model: tokens stay in [0, capacity] and move exactly as the
    /// rules say.
    #[test]
    fn aws_rules_match_the_model(capacity in 1u32..60, ops in ops()) {
        let budget = RetryBudget::quota(capacity, 5, 10, 1);
        let capacity = i64::from(capacity) * 1000;
        let mut model = capacity;
        let mut permits = Vec::new();
        for op in ops {
            match op {
                Op::Acquire(timeout) => {
                    let cost = if timeout { 10_000 } else { 5_000 };
                    let cause = if timeout { Cause::Timeout } else { Cause::Error };
                    match budget.try_acquire(cause) {
                        Ok(permit) => {
                            prop_assert!(model >= cost);
                            model -= cost;
                            permits.push((permit, cost));
                        }
                        Err(_) => prop_assert!(model < cost),
                    }
                }
                Op::Failure => budget.record_failure(),
                Op::Success(with_permit) => {
                    let permit = if with_permit { permits.pop() } else { None };
                    let refund = permit.as_ref().map_or(1_000, |(_, cost)| *cost);
                    budget.record_success(permit.map(|(p, _)| p));
                    model = (model + refund).min(capacity);
                }
            }
            let available = i64::try_from(budget.available_milli()).expect("small");
            prop_assert_eq!(available, model);
            prop_assert!((0..=capacity).contains(&available));
        }
    }

    /// gRPC rules: failures take one token (never below zero), successes add the ratio (never
    /// above the maximum), and retries are allowed exactly while more than half remains.
    #[test]
    fn grpc_rules_match_the_model(max in 1u32..20, ratio in 1u32..1_000, ops in ops()) {
        let budget = RetryBudget::grpc(max, ratio);
        let max = i64::from(max) * 1000;
        let mut model = max;
        for op in ops {
            match op {
                Op::Acquire(_) => {
                    let granted = budget.try_acquire(Cause::Error).is_ok();
                    prop_assert_eq!(granted, model > max / 2);
                }
                Op::Failure => {
                    budget.record_failure();
                    model = (model - 1000).max(0);
                }
                Op::Success(_) => {
                    budget.record_success(None);
                    model = (model + i64::from(ratio)).min(max);
                }
            }
            prop_assert_eq!(i64::try_from(budget.available_milli()).expect("small"), model);
        }
    }
}
