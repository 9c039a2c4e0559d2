//! [`LivePolicies`]: a policy table that can be replaced while decisions are being made.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::{PolicyKey, PolicySet, RequestContext};

/// A policy table shared by every clone, replaced as a whole with [`replace`](Self::replace)
/// while requests are decided: each decision reads the table once, so none sees half of an old
/// table and half of a new one.
///
/// A key's state is kept under its policy's name and subject, so replacing the table keeps
/// the state of every policy whose name stays, with its new limits applied from the next
/// decision on; the keys of a removed policy are no longer asked for and age out of the
/// backend like any idle key (the memory limiter's sweep, Redis's expiry).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tollgate_ratelimit::{Algorithm, LivePolicies, MemoryLimiter, Policy, PolicySet, RequestContext, Scope};
///
/// let per_user = |limit| {
///     Policy::new("per-user", Scope::User, Algorithm::sliding_window(limit, Duration::from_secs(60)))
/// };
/// let live = LivePolicies::new(PolicySet::new([per_user(1)?])?);
/// let limiter = MemoryLimiter::new();
/// let alice = RequestContext::new().user("alice");
/// assert!(limiter.check_now(&live.keys_for(&alice), 1)?.is_allowed());
/// assert!(!limiter.check_now(&live.keys_for(&alice), 1)?.is_allowed());
/// // A higher limit, while the limiter runs: alice's one request still counts.
/// live.replace(PolicySet::new([per_user(2)?])?);
/// assert!(limiter.check_now(&live.keys_for(&alice), 1)?.is_allowed());
/// assert!(!limiter.check_now(&live.keys_for(&alice), 1)?.is_allowed());
/// # Ok::<(), tollgate_ratelimit::Error>(())
/// ```
#[derive(Clone)]
pub struct LivePolicies {
    current: Arc<ArcSwap<PolicySet>>,
}

impl LivePolicies {
    /// A table that starts as `policies`.
    pub fn new(policies: PolicySet) -> Self {
        LivePolicies {
            current: Arc::new(ArcSwap::from_pointee(policies)),
        }
    }

    /// The table in force now.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// The keys of every policy of the table in force that applies to `ctx`: one read of the
    /// table, so one table's keys.
    pub fn keys_for(&self, ctx: &RequestContext<'_>) -> Vec<PolicyKey> {
        self.current.load().keys_for(ctx)
    }

    /// `read` applied to the table in force now: one read, so what it computes (the enforced
    /// and the shadow keys of a request, say) comes from one table.
    pub fn with_current<R>(&self, read: impl FnOnce(&PolicySet) -> R) -> R {
        read(&self.current.load())
    }

    /// Puts `policies` in force for every clone; the table it replaces.
    pub fn replace(&self, policies: PolicySet) -> Arc<PolicySet> {
        self.current.swap(Arc::new(policies))
    }
}

impl From<PolicySet> for LivePolicies {
    fn from(policies: PolicySet) -> Self {
        LivePolicies::new(policies)
    }
}

impl fmt::Debug for LivePolicies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LivePolicies")
            .field(&*self.current.load())
            .finish()
    }
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Algorithm, MemoryLimiter, Policy, Scope};

    fn policy(name: &str, limit: u64) -> Policy {
        Policy::new(
            name,
            Scope::User,
            Algorithm::sliding_window(limit, Duration::from_secs(60)),
        )
        .expect("valid")
    }

    /// Decisions racing a replacement each see one whole table: with two policies that are
    /// swapped for two others, no decision is ever made on one of each.
    #[test]
    fn a_decision_sees_one_whole_table() {
        let old = || PolicySet::new([policy("a", 1_000_000), policy("b", 1_000_000)]).expect("set");
        let new = || PolicySet::new([policy("c", 1_000_000), policy("d", 1_000_000)]).expect("set");
        let live = LivePolicies::new(old());
        let swapper = {
            let live = live.clone();
            std::thread::spawn(move || {
                for i in 0..2_000 {
                    live.replace(if i % 2 == 0 { new() } else { old() });
                }
            })
        };
        let ctx = RequestContext::new().user("alice");
        for _ in 0..20_000 {
            let keys = live.keys_for(&ctx);
            let names: Vec<_> = keys.iter().map(|k| k.policy().name().to_owned()).collect();
            assert!(
                names == ["a", "b"] || names == ["c", "d"],
                "half a table: {names:?}"
            );
        }
        swapper.join().expect("the swapper");
    }

    /// One step of a run: a decision, a replacement with the other table, or time passing.
    #[derive(Clone, Debug)]
    enum Step {
        Check,
        Swap,
        Wait(u64),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            6 => Just(Step::Check),
            2 => Just(Step::Swap),
            1 => (1_u64..30_000).prop_map(Step::Wait),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Two tables of one sliding-log policy (exact: never more than its limit in any
        /// window) swapped back and forth while deciding: within any one window the requests
        /// admitted never exceed the larger of the two limits, and a request is admitted only
        /// if the window then holds no more than the limit in force.
        #[test]
        fn swapping_tables_never_admits_more_than_either_allows(
            a in 1_u64..8,
            b in 1_u64..8,
            steps in proptest::collection::vec(step(), 1..120),
        ) {
            use crate::clock::{Clock, ManualClock, Timestamp};
            let window = Duration::from_secs(60);
            let log = |limit| {
                let algorithm = Algorithm::sliding_log(limit, window);
                PolicySet::new([Policy::new("p", Scope::User, algorithm).expect("valid")])
                    .expect("set")
            };
            let clock = ManualClock::starting_at(Timestamp::from_secs(1_000));
            let limiter = MemoryLimiter::builder().clock(clock.clone()).build();
            let live = LivePolicies::new(log(a));
            let (mut limit, mut other) = (a, b);
            let ctx = RequestContext::new().user("dave");
            let mut admitted: Vec<Timestamp> = Vec::new();
            for step in steps {
                match step {
                    Step::Check => {
                        let now = clock.now();
                        let allowed =
                            limiter.check_now(&live.keys_for(&ctx), 1).expect("decided").is_allowed();
                        if allowed {
                            admitted.push(now);
                        }
                        let since = now.saturating_sub(window);
                        let in_window = admitted.iter().filter(|t| **t > since).count() as u64;
                        proptest::prop_assert!(in_window <= a.max(b), "{in_window} > max({a}, {b})");
                        if allowed {
                            proptest::prop_assert!(
                                in_window <= limit,
                                "admitted with {in_window} in the window, the limit in force {limit}"
                            );
                        }
                    }
                    Step::Swap => {
                        live.replace(log(other));
                        std::mem::swap(&mut limit, &mut other);
                    }
                    Step::Wait(ms) => clock.advance(Duration::from_millis(ms)),
                }
            }
        }
    }

    #[test]
    fn a_removed_policy_no_longer_applies_and_a_kept_one_keeps_its_state() {
        let limiter = MemoryLimiter::new();
        let live = LivePolicies::new(
            PolicySet::new([policy("kept", 2), policy("removed", 1)]).expect("set"),
        );
        let ctx = RequestContext::new().user("bob");
        let allowed = |live: &LivePolicies| {
            let keys = live.keys_for(&ctx);
            limiter.check_now(&keys, 1).expect("decided").is_allowed()
        };
        assert!(allowed(&live));
        assert!(!allowed(&live), "`removed` allows one");
        let previous = live.replace(PolicySet::new([policy("kept", 2)]).expect("set"));
        assert_eq!(previous.policies().len(), 2);
        assert!(allowed(&live));
        assert!(!allowed(&live), "kept's two requests are both counted");
    }
}
