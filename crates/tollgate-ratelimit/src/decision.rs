//! The answer to "may this request proceed?", for every policy that applied.
//!
//! A [`Decision`] borrows the [`PolicyKey`]s it was taken for: building one costs no allocation
//! and no reference-count traffic for up to four policies, which keeps the memory backend's hot
//! path free of shared writes.

use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;

use crate::clock::Timestamp;
use crate::policy::{Policy, PolicyKey};

/// One policy's part of a [`Decision`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDecision<'k> {
    key: &'k PolicyKey,
    remaining: u64,
    /// µs; kept as integers so that a decision stays small enough to return by value cheaply.
    reset_after: u64,
    /// µs, or [`ADMITTED`] when the policy admits the request.
    retry_after: u64,
}

/// `retry_after` of a policy that admits the request.
const ADMITTED: u64 = u64::MAX;

fn micros(duration: Duration) -> u64 {
    crate::clock::duration_to_micros(duration).min(ADMITTED - 1)
}

impl<'k> PolicyDecision<'k> {
    /// A policy key's verdict. `retry_after` is `None` exactly when the policy admits the request.
    pub fn new(
        key: &'k PolicyKey,
        remaining: u64,
        reset_after: Duration,
        retry_after: Option<Duration>,
    ) -> Self {
        PolicyDecision {
            key,
            remaining,
            reset_after: micros(reset_after),
            retry_after: retry_after.map_or(ADMITTED, micros),
        }
    }

    #[cfg_attr(not(feature = "memory"), allow(dead_code))]
    /// [`new`](Self::new) for backends that already hold microseconds (no conversions on the
    /// hot path).
    #[inline]
    pub(crate) fn from_micros(
        key: &'k PolicyKey,
        remaining: u64,
        reset_after: u64,
        retry_after: Option<u64>,
    ) -> Self {
        PolicyDecision {
            key,
            remaining,
            reset_after: reset_after.min(ADMITTED - 1),
            retry_after: retry_after.map_or(ADMITTED, |us| us.min(ADMITTED - 1)),
        }
    }

    /// The key (policy and subject) this verdict is for.
    pub fn key(&self) -> &'k PolicyKey {
        self.key
    }

    /// The policy.
    pub fn policy(&self) -> &'k Arc<Policy> {
        self.key.policy()
    }

    /// Whether this policy alone would admit the request.
    pub fn is_allowed(&self) -> bool {
        self.retry_after == ADMITTED
    }

    /// The policy's capacity: its limit, or a token bucket's burst.
    pub fn limit(&self) -> u64 {
        self.key.policy().capacity()
    }

    /// Requests of cost 1 this policy would still admit (after this request, if it was admitted).
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Time until the policy's full capacity is back if nothing else is admitted.
    pub fn reset_after(&self) -> Duration {
        Duration::from_micros(self.reset_after)
    }

    /// How long to wait before this policy admits the request; `None` if it admits it now.
    pub fn retry_after(&self) -> Option<Duration> {
        (self.retry_after != ADMITTED).then(|| Duration::from_micros(self.retry_after))
    }
}

/// A rate-limit decision over all of a request's policies, made atomically.
///
/// A denied request consumed nothing from any policy. The [`binding`](Self::binding) policy is the
/// one to report in headers: when denied, the denying policy with the longest wait; when allowed,
/// the one with the fewest requests remaining.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<'k> {
    allowed: bool,
    degraded: bool,
    now: Timestamp,
    binding: Option<usize>,
    policies: SmallVec<[PolicyDecision<'k>; 4]>,
}

impl<'k> Decision<'k> {
    /// Combines per-policy verdicts taken at `now` (the backend's clock) into one decision.
    pub fn new(now: Timestamp, policies: impl IntoIterator<Item = PolicyDecision<'k>>) -> Self {
        Self::from_vec(now, policies.into_iter().collect())
    }

    /// The decision of a single policy (the hot path: no collection, no search).
    #[inline]
    pub fn single(now: Timestamp, policy: PolicyDecision<'k>) -> Self {
        let mut policies = SmallVec::new();
        let allowed = policy.is_allowed();
        policies.push(policy);
        Decision {
            allowed,
            degraded: false,
            now,
            binding: Some(0),
            policies,
        }
    }

    fn from_vec(now: Timestamp, policies: SmallVec<[PolicyDecision<'k>; 4]>) -> Self {
        let allowed = policies.iter().all(PolicyDecision::is_allowed);
        let binding = Self::tightest(&policies, allowed, |_| true);
        Decision {
            allowed,
            degraded: false,
            now,
            binding,
            policies,
        }
    }

    /// The index of the binding policy among those `eligible` admits: when `allowed`, the one
    /// with the fewest remaining (on a tie the longer reset, then the first); otherwise the
    /// denying one with the longest wait.
    fn tightest(
        policies: &[PolicyDecision<'k>],
        allowed: bool,
        eligible: impl Fn(&PolicyDecision<'k>) -> bool,
    ) -> Option<usize> {
        let candidates = (0..policies.len()).filter(|&i| eligible(&policies[i]));
        if allowed {
            // Fewest remaining; on a tie the longer reset; on a tie the first.
            candidates.reduce(|best, i| {
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
            candidates
                .filter(|&i| !policies[i].is_allowed())
                .reduce(|best, i| {
                    if policies[i].retry_after > policies[best].retry_after {
                        i
                    } else {
                        best
                    }
                })
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
    pub fn policies(&self) -> &[PolicyDecision<'k>] {
        &self.policies
    }

    /// The policy that decided: see the type-level docs. `None` when no policy applied.
    pub fn binding(&self) -> Option<&PolicyDecision<'k>> {
        self.binding.map(|i| &self.policies[i])
    }

    /// The policy a response may describe to its caller: the binding one among the policies
    /// counted for the caller alone, never one whose [scope is shared](crate::Scope::is_shared)
    /// (its remaining count would tell anyone how much everyone else sent). `None` when only
    /// shared policies applied, or when a shared one alone denied.
    pub fn disclosed(&self) -> Option<&PolicyDecision<'k>> {
        let binding = self.binding()?;
        if !binding.policy().scope().is_shared() {
            return Some(binding);
        }
        let own = |p: &PolicyDecision<'k>| !p.policy().scope().is_shared();
        Self::tightest(&self.policies, self.allowed, own).map(|i| &self.policies[i])
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

    fn key(name: &str) -> PolicyKey {
        let algorithm = Algorithm::sliding_window(10, Duration::from_secs(1));
        let policy = Policy::new(name, Scope::Global, algorithm).expect("valid");
        PolicyKey::new(Arc::new(policy), "")
    }

    #[test]
    fn binding_policy_is_the_tightest() {
        let secs = Duration::from_secs;
        let (a, b, c) = (key("a"), key("b"), key("c"));
        let d = Decision::new(
            Timestamp::EPOCH,
            [
                PolicyDecision::new(&a, 3, secs(5), None),
                PolicyDecision::new(&b, 3, secs(9), None),
                PolicyDecision::new(&c, 7, secs(1), None),
            ],
        );
        assert!(d.is_allowed());
        assert_eq!(d.binding().map(|p| p.policy().name()), Some("b"));
        assert_eq!(d.retry_after(), None);

        let d = Decision::new(
            Timestamp::EPOCH,
            [
                PolicyDecision::new(&a, 0, secs(5), Some(secs(2))),
                PolicyDecision::new(&b, 5, secs(9), None),
                PolicyDecision::new(&c, 0, secs(1), Some(secs(3))),
            ],
        );
        assert!(!d.is_allowed());
        assert_eq!(d.binding().map(|p| p.policy().name()), Some("c"));
        assert_eq!(d.retry_after(), Some(secs(3)));
        assert!(Decision::new(Timestamp::EPOCH, []).binding().is_none());
    }
}
