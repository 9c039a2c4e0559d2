//! [`RequestContext`] (what a limiter needs to know about a request) and [`PolicySet`] (the
//! ordered, uniquely named policies a request is checked against).

use std::net::IpAddr;
use std::sync::Arc;

use crate::Error;
use crate::policy::{Policy, PolicyKey};

/// What a limiter needs to know about a request to pick its keys.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestContext<'a> {
    pub(crate) user: Option<&'a str>,
    pub(crate) ip: Option<IpAddr>,
    pub(crate) endpoint: Option<&'a str>,
}

impl<'a> RequestContext<'a> {
    /// An anonymous request with no known IP or endpoint (only global policies apply).
    pub fn new() -> Self {
        RequestContext::default()
    }

    /// The authenticated user.
    pub fn user(mut self, user: &'a str) -> Self {
        self.user = Some(user);
        self
    }

    /// The client's IP address (after trusted-proxy handling, which is the caller's job).
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    /// The endpoint as `METHOD /route/template`, e.g. `POST /api/v1/payments`. Use the route
    /// template, not the raw path, or every distinct path becomes its own counter.
    pub fn endpoint(mut self, endpoint: &'a str) -> Self {
        self.endpoint = Some(endpoint);
        self
    }
}

/// An ordered set of uniquely named policies.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    policies: Vec<Arc<Policy>>,
}

impl PolicySet {
    /// A set of policies; names must be unique (they key the state).
    pub fn new(policies: impl IntoIterator<Item = Policy>) -> Result<Self, Error> {
        let policies: Vec<Arc<Policy>> = policies.into_iter().map(Arc::new).collect();
        for (i, p) in policies.iter().enumerate() {
            if policies[..i].iter().any(|q| q.name() == p.name()) {
                return Err(Error::invalid_policy(p.name(), "the name is used twice"));
            }
        }
        Ok(PolicySet { policies })
    }

    /// The default table: global 1000/60 s and per user 100/60 s (sliding window), and a
    /// per-user burst token bucket of 20/s holding 50. Add endpoint limits with
    /// [`with`](Self::with).
    pub fn defaults() -> Self {
        crate::config::RateLimitConfig::default()
            .into_policy_set()
            .unwrap_or_default()
    }

    /// This set with `policy` inserted at `index` (clamped to the end); fails if the name is
    /// taken.
    pub fn with(self, index: usize, policy: Policy) -> Result<Self, Error> {
        let mut policies: Vec<Policy> = self.policies.iter().map(|p| (**p).clone()).collect();
        policies.insert(index.min(policies.len()), policy);
        PolicySet::new(policies)
    }

    /// The policies, in order.
    pub fn policies(&self) -> &[Arc<Policy>] {
        &self.policies
    }

    /// The keys of every policy that applies to `ctx`, in the set's order.
    pub fn keys_for(&self, ctx: &RequestContext<'_>) -> Vec<PolicyKey> {
        self.policies
            .iter()
            .filter_map(|p| p.key_for(ctx))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Algorithm, Scope};

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let p = || Policy::new("x", Scope::Global, Algorithm::sliding_window(1, secs(1)));
        assert!(PolicySet::new([p().expect("valid"), p().expect("valid")]).is_err());
    }

    #[test]
    fn keys_per_scope() {
        let payments = Policy::new(
            "payments",
            Scope::User,
            Algorithm::sliding_window(10, secs(60)),
        )
        .expect("valid")
        .for_endpoint("POST /api/v1/payments");
        assert_eq!(PolicySet::defaults().policies().len(), 3);
        let set = PolicySet::defaults().with(2, payments).expect("a new name");
        assert_eq!(set.policies().len(), 4);
        let ip: IpAddr = "::ffff:10.1.2.3".parse().expect("ip");
        let ctx = RequestContext::new()
            .user("al{ice}")
            .ip(ip)
            .endpoint("POST /api/v1/payments");
        let keys: Vec<_> = set
            .keys_for(&ctx)
            .iter()
            .map(|k| k.storage_key().to_owned())
            .collect();
        assert_eq!(
            keys,
            [
                "global:",
                "per-user:al%7Bice%7D",
                "payments:al%7Bice%7D",
                "burst:al%7Bice%7D"
            ]
        );
        // Anonymous requests on another endpoint only see the global policy.
        let anon = set.keys_for(&RequestContext::new().endpoint("GET /health"));
        assert_eq!(anon.len(), 1);
        let ip_policy = Arc::new(
            Policy::new("ip", Scope::Ip, Algorithm::sliding_window(1, secs(1))).expect("valid"),
        );
        let v4 = ip_policy
            .key_for(&RequestContext::new().ip(ip))
            .expect("applies");
        assert_eq!(v4.storage_key(), "ip:10.1.2.3");
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        let v6 = ip_policy
            .key_for(&RequestContext::new().ip(v6))
            .expect("applies");
        assert_eq!(v6.storage_key(), "ip:2001:db8::/64");
    }
}
