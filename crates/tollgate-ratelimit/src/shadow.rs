//! Shadow policies: limits tried on real traffic before they are enforced.
//!
//! A policy in [`Mode::Shadow`](crate::Mode::Shadow) is left out of
//! [`PolicySet::keys_for`](crate::PolicySet::keys_for), so it never takes part in a decision.
//! Once the enforced policies have admitted a request, [`would_deny`] decides each of the
//! request's [shadow keys](crate::PolicySet::shadow_keys_for) on its own counter (kept apart from
//! any enforced policy's) and reports the ones that would have refused it. The counters then hold
//! what the policy would have admitted had it been enforced.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tollgate_ratelimit::{Algorithm, MemoryLimiter, Mode, Policy, PolicySet, RequestContext, Scope};
//! use tollgate_ratelimit::shadow::would_deny;
//!
//! # tokio_test_block_on(async {
//! let minute = Duration::from_secs(60);
//! let set = PolicySet::new([
//!     Policy::new("per-user", Scope::User, Algorithm::sliding_window(100, minute))?,
//!     Policy::new("stricter", Scope::User, Algorithm::sliding_window(1, minute))?
//!         .with_mode(Mode::Shadow),
//! ])?;
//! let limiter = MemoryLimiter::new();
//! let ctx = RequestContext::new().user("alice");
//! let (keys, shadows) = (set.keys_for(&ctx), set.shadow_keys_for(&ctx));
//! for expected in [0, 1] {
//!     assert!(limiter.check_now(&keys, 1)?.is_allowed(), "the shadow refuses nothing");
//!     assert_eq!(would_deny(&limiter, &shadows, 1).await?.len(), expected);
//! }
//! # Ok::<(), tollgate_ratelimit::Error>(())
//! # }).unwrap();
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use std::sync::Arc;

use crate::{Error, Policy, PolicyKey, RateLimiter};

/// Decides each of `shadow_keys` alone at `cost` (consuming from its own counter when it admits)
/// and returns the policies that would have refused. Call it only for requests the enforced
/// policies admitted, so that a shadow counter counts what its policy would have let through.
///
/// One backend call per key (shadow policies are decided independently of each other, where
/// enforced ones are all-or-nothing); a cost above a policy's capacity is a would-be denial
/// without a call.
pub async fn would_deny<L: RateLimiter + ?Sized>(
    limiter: &L,
    shadow_keys: &[PolicyKey],
    cost: u64,
) -> Result<Vec<Arc<Policy>>, Error> {
    let mut denied = Vec::new();
    for key in shadow_keys {
        let refused = cost > key.policy().capacity()
            || !limiter
                .check(std::slice::from_ref(key), cost)
                .await?
                .is_allowed();
        if refused {
            denied.push(Arc::clone(key.policy()));
        }
    }
    Ok(denied)
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::clock::{Clock, ManualClock, Timestamp};
    use crate::{Algorithm, MemoryLimiter, Mode, PolicySet, RequestContext, Scope};

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => panic!("the memory backend never waits"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The same requests decided with and without a shadow policy get the same answers,
        /// and the shadow (an exact sliding log) reports a would-be denial exactly when the
        /// requests it admitted in the last window already reach its limit.
        #[test]
        fn a_shadow_never_changes_an_answer_and_denies_as_its_model(
            enforced in 1_u64..6,
            shadow in 1_u64..6,
            gaps in proptest::collection::vec(0_u64..40_000, 1..80),
        ) {
            let window = Duration::from_secs(60);
            let policy = |name: &str, limit| {
                Policy::new(name, Scope::User, Algorithm::sliding_log(limit, window)).expect("valid")
            };
            let plain = PolicySet::new([policy("p", enforced)]).expect("set");
            let shadowed = PolicySet::new([
                policy("p", enforced),
                policy("s", shadow).with_mode(Mode::Shadow),
            ])
            .expect("set");
            let clock = ManualClock::starting_at(Timestamp::from_secs(1_000));
            let alone = MemoryLimiter::builder().clock(clock.clone()).build();
            let with_shadow = MemoryLimiter::builder().clock(clock.clone()).build();
            let ctx = RequestContext::new().user("u");
            let mut shadow_admitted: Vec<Timestamp> = Vec::new();
            for gap in gaps {
                clock.advance(Duration::from_millis(gap));
                let now = clock.now();
                let plain_keys = plain.keys_for(&ctx);
                let expected = alone.check_now(&plain_keys, 1).expect("decided");
                let keys = shadowed.keys_for(&ctx);
                let got = with_shadow.check_now(&keys, 1).expect("decided");
                prop_assert_eq!(got.is_allowed(), expected.is_allowed());
                if !got.is_allowed() {
                    continue;
                }
                let denied = block_on(would_deny(&with_shadow, &shadowed.shadow_keys_for(&ctx), 1))
                    .expect("decided");
                let since = now.saturating_sub(window);
                let in_window = shadow_admitted.iter().filter(|t| **t > since).count() as u64;
                prop_assert_eq!(denied.len() == 1, in_window >= shadow);
                if denied.is_empty() {
                    shadow_admitted.push(now);
                }
            }
        }
    }
}
