//! The strangers' bucket: requests that no key vouches for — refused ones without a valid key,
//! and the public routes anyone may call — are limited here and nowhere else. Two policies,
//! kept in this process (a stranger is not worth a round trip to Redis): `anonymous`, per
//! client address, and `anonymous-ceiling`, for all strangers together. Neither is a policy an
//! authenticated request consumes, so no number of strangers can use up a user's quota.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use http::StatusCode;
use tollgate_ratelimit::{
    Algorithm, DynRateLimiter, LivePolicies, MemoryLimiter, Policy, PolicySet, RequestContext,
    Scope,
};

use crate::auth::unauthorized;

/// The per-address policy's name.
pub(crate) const PER_ADDRESS: &str = "anonymous";
/// The ceiling's name.
pub(crate) const CEILING: &str = "anonymous-ceiling";

/// The strangers' limiter and its two policies; a clone shares both.
#[derive(Clone, Debug)]
pub(crate) struct AnonymousLimit {
    limiter: Arc<MemoryLimiter>,
    /// Replaced by a reload (`limits.anonymous_*`).
    policies: LivePolicies,
}

impl AnonymousLimit {
    /// `per_minute` requests a minute from one address, `ceiling_per_minute` from all.
    pub(crate) fn new(per_minute: u64, ceiling_per_minute: u64) -> Result<Self, String> {
        Ok(AnonymousLimit {
            limiter: Arc::new(MemoryLimiter::new()),
            policies: LivePolicies::new(policies(per_minute, ceiling_per_minute)?),
        })
    }

    /// Puts new limits (from [`policies`]) in force; what each address used so far is kept.
    pub(crate) fn replace(&self, policies: PolicySet) {
        self.policies.replace(policies);
    }

    /// The limiter, for the public routes' rate-limit layer.
    pub(crate) fn limiter(&self) -> Arc<dyn DynRateLimiter> {
        Arc::clone(&self.limiter) as Arc<dyn DynRateLimiter>
    }

    /// The two policies, for the public routes' rate-limit layer.
    pub(crate) fn policies(&self) -> &LivePolicies {
        &self.policies
    }

    /// The answer to a request without a valid key from `ip` (the client's address, behind
    /// trusted proxies): `401`, or `429` past the address's limit or the strangers' ceiling.
    pub(crate) fn refuse(&self, ip: Option<IpAddr>) -> Response {
        let Some(ip) = ip else {
            return unauthorized();
        };
        let keys = self.policies.keys_for(&RequestContext::new().ip(ip));
        let denied = match self.limiter.check_now(&keys, 1) {
            Ok(decision) if !decision.is_allowed() => {
                Some(decision.retry_after().unwrap_or(Duration::from_secs(1)))
            }
            _ => None,
        };
        match denied {
            Some(wait) => crate::responses::with_retry_after(
                crate::responses::simple(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many requests without a valid key",
                ),
                wait,
            ),
            None => unauthorized(),
        }
    }
}

/// The address's policy and the ceiling.
pub(crate) fn policies(per_minute: u64, ceiling_per_minute: u64) -> Result<PolicySet, String> {
    let minute = Duration::from_secs(60);
    let policy = |name: &str, scope, limit| {
        Policy::new(name, scope, Algorithm::sliding_window(limit, minute))
            .map_err(|e| format!("limits.anonymous_*: {e}"))
    };
    PolicySet::new(vec![
        policy(PER_ADDRESS, Scope::Ip, per_minute)?,
        policy(CEILING, Scope::Global, ceiling_per_minute)?,
    ])
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_limits_name_the_setting() {
        let error = AnonymousLimit::new(0, 10).expect_err("a zero limit");
        assert!(error.contains("limits.anonymous_"), "{error}");
        assert!(AnonymousLimit::new(120, 6_000).is_ok());
    }
}
