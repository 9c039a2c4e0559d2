//! The answer to "may this request proceed?", for every policy that applied.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::policy::Policy;

/// One policy's part of a [`Decision`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDecision {
    policy: Arc<Policy>,
    allowed: bool,
    remaining: u64,
    reset_after: Duration,
    retry_after: Option<Duration>,
}

impl PolicyDecision {
    /// A policy's verdict. `retry_after` is `None` exactly when the policy admits the request.
    pub fn new(
        policy: Arc<Policy>,
        remaining: u64,
        reset_after: Duration,
        retry_after: Option<Duration>,
    ) -> Self {
        PolicyDecision {
            policy,
            allowed: retry_after.is_none(),
            remaining,
            reset_after,
            retry_after,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Whether this policy alone would admit the request.
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// The policy's capacity: its limit, or a token bucket's burst.
    pub fn limit(&self) -> u64 {
        self.policy.capacity()
    }

    /// Requests of cost 1 this policy would still admit (after this request, if it was admitted).
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Time until the policy's full capacity is back if nothing else is admitted.
    pub fn reset_after(&self) -> Duration {
        self.reset_after
    }

    /// How long to wait before this policy admits the request; `None` if it admits it now.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

/// A rate-limit decision over all of a request's policies, made atomically.
///
/// A denied request consumed nothing from any policy. The [`binding`](Self::binding) policy is the
/// one to report in headers: when denied, the denying policy with the longest wait; when allowed,
/// the one with the fewest requests remaining.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    allowed: bool,
    now: Timestamp,
    policies: Vec<PolicyDecision>,
    binding: Option<usize>,
    degraded: bool,
}

impl Decision {
    /// Combines per-policy verdicts taken at `now` (the backend's clock) into one decision.
    pub fn new(now: Timestamp, policies: Vec<PolicyDecision>) -> Self {
        let allowed = policies.iter().all(|p| p.allowed);
        let binding = if allowed {
            // Fewest remaining; on a tie the longer reset; on a tie the first.
            (0..policies.len()).reduce(|best, i| {
                let (a, b) = (&policies[best], &policies[i]);
                if (b.remaining, std::cmp::Reverse(b.reset_after))
                    < (a.remaining, std::cmp::Reverse(a.reset_after))
                {
                    i
                } else {
                    best
                }
            })
        } else {
            (0..policies.len())
                .filter(|&i| !policies[i].allowed)
                .reduce(|best, i| {
                    if policies[i].retry_after > policies[best].retry_after {
                        i
                    } else {
                        best
                    }
                })
        };
        Decision {
            allowed,
            now,
            policies,
            binding,
            degraded: false,
        }
    }

    /// Marks the decision as taken without the primary backend (fail-open, fail-closed or local
    /// fallback while Redis was unreachable).
    pub fn degraded(mut self) -> Self {
        self.degraded = true;
        self
    }

    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// Whether the decision was taken without the primary backend.
    pub fn is_degraded(&self) -> bool {
        self.degraded
    }

    /// When the decision was taken, by the backend's clock.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Every policy's verdict, in the order the keys were given.
    pub fn policies(&self) -> &[PolicyDecision] {
        &self.policies
    }

    /// The policy that decided: see the type-level docs. `None` when no policy applied.
    pub fn binding(&self) -> Option<&PolicyDecision> {
        self.binding.map(|i| &self.policies[i])
    }

    /// How long to wait before retrying; `None` when the request was admitted.
    pub fn retry_after(&self) -> Option<Duration> {
        if self.allowed {
            None
        } else {
            self.binding().and_then(PolicyDecision::retry_after)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, Scope};

    fn policy(name: &str) -> Arc<Policy> {
        Arc::new(
            Policy::new(
                name,
                Scope::Global,
                Algorithm::sliding_window(10, Duration::from_secs(1)),
            )
            .expect("valid"),
        )
    }

    #[test]
    fn binding_policy_is_the_tightest() {
        let secs = Duration::from_secs;
        let d = Decision::new(
            Timestamp::EPOCH,
            vec![
                PolicyDecision::new(policy("a"), 3, secs(5), None),
                PolicyDecision::new(policy("b"), 3, secs(9), None),
                PolicyDecision::new(policy("c"), 7, secs(1), None),
            ],
        );
        assert!(d.is_allowed());
        assert_eq!(d.binding().map(|p| p.policy().name()), Some("b"));
        assert_eq!(d.retry_after(), None);

        let d = Decision::new(
            Timestamp::EPOCH,
            vec![
                PolicyDecision::new(policy("a"), 0, secs(5), Some(secs(2))),
                PolicyDecision::new(policy("b"), 5, secs(9), None),
                PolicyDecision::new(policy("c"), 0, secs(1), Some(secs(3))),
            ],
        );
        assert!(!d.is_allowed());
        assert_eq!(d.binding().map(|p| p.policy().name()), Some("c"));
        assert_eq!(d.retry_after(), Some(secs(3)));
        assert!(Decision::new(Timestamp::EPOCH, vec![]).binding().is_none());
    }
}
