//! [`RequestContext`] (what a limiter needs to know about a request) and [`PolicySet`] (the
//! ordered, uniquely named policies a request is checked against, with the tiers that replace
//! or add to them for some subjects).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::Error;
use crate::policy::{Mode, Policy, PolicyKey, is_valid_name};

/// What a limiter needs to know about a request to pick its keys.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestContext<'a> {
    pub(crate) user: Option<&'a str>,
    pub(crate) ip: Option<IpAddr>,
    pub(crate) endpoint: Option<&'a str>,
    pub(crate) tier: Option<&'a str>,
    pub(crate) dimensions: &'a [(&'a str, &'a str)],
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

    /// The subject's tier: its policies are the [tier's](PolicySet::with_tier) rather than the
    /// defaults. A tier the set does not know means the defaults.
    pub fn tier(mut self, tier: &'a str) -> Self {
        self.tier = Some(tier);
        self
    }

    /// The request's values of application-defined dimensions, as `(dimension, value)` pairs
    /// (e.g. `[("merchant", "m_42")]`), for [`Scope::Dimension`](crate::Scope::Dimension)
    /// policies. Borrowed: building a context allocates nothing.
    pub fn dimensions(mut self, dimensions: &'a [(&'a str, &'a str)]) -> Self {
        self.dimensions = dimensions;
        self
    }

    /// The value of `dimension`, if the request has one.
    pub(crate) fn dimension_value(&self, dimension: &str) -> Option<&'a str> {
        self.dimensions
            .iter()
            .find(|(name, _)| *name == dimension)
            .map(|(_, value)| *value)
    }
}

/// One tier's policies, resolved, and split by mode so that a decision walks only the ones it
/// needs.
#[derive(Clone, Debug, Default)]
struct Table {
    all: Vec<Arc<Policy>>,
    enforced: Vec<Arc<Policy>>,
    shadow: Vec<Arc<Policy>>,
}

impl Table {
    fn new(all: Vec<Arc<Policy>>) -> Self {
        let (shadow, enforced) = all.iter().cloned().partition(|p| p.mode() == Mode::Shadow);
        Table {
            all,
            enforced,
            shadow,
        }
    }
}

/// An ordered set of uniquely named policies: the defaults, and named tiers that replace some of
/// them or add others for the subjects that carry the tier.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tollgate_ratelimit::{Algorithm, Policy, PolicySet, RequestContext, Scope};
///
/// let minute = Duration::from_secs(60);
/// let per_user = |limit| Policy::new("per-user", Scope::User, Algorithm::sliding_window(limit, minute));
/// let set = PolicySet::new([per_user(100)?])?
///     .with_tier("premium", [per_user(1_000)?])?;
///
/// let keys = set.keys_for(&RequestContext::new().user("alice").tier("premium"));
/// assert_eq!(keys[0].policy().capacity(), 1_000);
/// // The same counter ("per-user:bob") under either tier: moving a user keeps its count.
/// let keys = set.keys_for(&RequestContext::new().user("bob"));
/// assert_eq!((keys[0].policy().capacity(), keys[0].storage_key()), (100, "per-user:bob"));
/// # Ok::<(), tollgate_ratelimit::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    defaults: Table,
    /// Each tier as given (its replacements and additions), in order, so that changing the
    /// defaults resolves the tiers again.
    tier_overrides: Vec<(Arc<str>, Vec<Policy>)>,
    /// Each tier resolved against the defaults. foldhash: tier names are configuration.
    tiers: HashMap<Arc<str>, Table, foldhash::fast::RandomState>,
}

impl PolicySet {
    /// A set of policies; names must be unique (they key the state).
    pub fn new(policies: impl IntoIterator<Item = Policy>) -> Result<Self, Error> {
        let policies: Vec<Arc<Policy>> = policies.into_iter().map(Arc::new).collect();
        check_unique(&policies)?;
        Ok(PolicySet {
            defaults: Table::new(policies),
            ..PolicySet::default()
        })
    }

    /// The default table: global 1000/60 s and per user 100/60 s (sliding window), and a
    /// per-user burst token bucket of 20/s holding 50. Add endpoint limits with
    /// [`with`](Self::with).
    pub fn defaults() -> Self {
        crate::config::RateLimitConfig::default()
            .into_policy_set()
            .unwrap_or_default()
    }

    /// This set with `policy` inserted at `index` (clamped to the end) of the defaults; fails if
    /// the name is taken.
    pub fn with(self, index: usize, policy: Policy) -> Result<Self, Error> {
        let mut policies: Vec<Policy> = self.defaults.all.iter().map(|p| (**p).clone()).collect();
        policies.insert(index.min(policies.len()), policy);
        let mut set = PolicySet::new(policies)?;
        for (tier, overrides) in self.tier_overrides {
            set = set.with_tier(&tier, overrides)?;
        }
        Ok(set)
    }

    /// This set with a tier named `tier` (1–64 characters of `[A-Za-z0-9_.-]`): each of
    /// `policies` replaces the default of the same name, in its place, or is added after the
    /// defaults. A replaced policy keeps its counters (they are keyed by name and subject), so a
    /// subject moving between tiers keeps what it has used. Fails if the tier exists.
    pub fn with_tier(
        mut self,
        tier: &str,
        policies: impl IntoIterator<Item = Policy>,
    ) -> Result<Self, Error> {
        if !is_valid_name(tier) {
            return Err(Error::invalid_policy(
                tier,
                "a tier's name must be 1-64 characters of [A-Za-z0-9_.-]",
            ));
        }
        if self.tiers.contains_key(tier) {
            return Err(Error::invalid_policy(tier, "the tier is defined twice"));
        }
        let overrides: Vec<Policy> = policies.into_iter().collect();
        let mut resolved = self.defaults.all.clone();
        for policy in &overrides {
            match resolved.iter_mut().find(|p| p.name() == policy.name()) {
                Some(default) => *default = Arc::new(policy.clone()),
                None => resolved.push(Arc::new(policy.clone())),
            }
        }
        check_unique(&resolved)
            .map_err(|_| Error::invalid_policy(tier, "the tier names a policy twice"))?;
        let tier: Arc<str> = tier.into();
        self.tiers.insert(Arc::clone(&tier), Table::new(resolved));
        self.tier_overrides.push((tier, overrides));
        Ok(self)
    }

    /// The default policies, in order.
    pub fn policies(&self) -> &[Arc<Policy>] {
        &self.defaults.all
    }

    /// The policies of `tier` (the defaults when `None` or unknown), in order, shadow ones
    /// included.
    pub fn policies_for(&self, tier: Option<&str>) -> &[Arc<Policy>] {
        &self.table(tier).all
    }

    /// The names of the tiers, in the order they were added.
    pub fn tiers(&self) -> impl Iterator<Item = &str> {
        self.tier_overrides.iter().map(|(name, _)| &**name)
    }

    /// Whether the set has a tier named `tier`.
    pub fn has_tier(&self, tier: &str) -> bool {
        self.tiers.contains_key(tier)
    }

    /// The keys of every enforced policy that applies to `ctx` (under its tier), in the set's
    /// order: what a limiter decides.
    pub fn keys_for(&self, ctx: &RequestContext<'_>) -> Vec<PolicyKey> {
        keys(&self.table(ctx.tier).enforced, ctx)
    }

    /// The keys of every [shadow](Mode::Shadow) policy that applies to `ctx`, for
    /// [`would_deny`](crate::shadow::would_deny). Empty, with no allocation, when the tier has
    /// none.
    pub fn shadow_keys_for(&self, ctx: &RequestContext<'_>) -> Vec<PolicyKey> {
        keys(&self.table(ctx.tier).shadow, ctx)
    }

    /// The table of `tier`: a hash lookup on the borrowed name, no allocation.
    fn table(&self, tier: Option<&str>) -> &Table {
        tier.and_then(|tier| self.tiers.get(tier))
            .unwrap_or(&self.defaults)
    }
}

fn keys(policies: &[Arc<Policy>], ctx: &RequestContext<'_>) -> Vec<PolicyKey> {
    policies.iter().filter_map(|p| p.key_for(ctx)).collect()
}

fn check_unique(policies: &[Arc<Policy>]) -> Result<(), Error> {
    for (i, p) in policies.iter().enumerate() {
        if policies[..i].iter().any(|q| q.name() == p.name()) {
            return Err(Error::invalid_policy(p.name(), "the name is used twice"));
        }
    }
    Ok(())
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

    fn user_policy(name: &str, limit: u64) -> Policy {
        Policy::new(
            name,
            Scope::User,
            Algorithm::sliding_window(limit, secs(60)),
        )
        .expect("valid")
    }

    fn names_and_limits(keys: &[PolicyKey]) -> Vec<(String, u64)> {
        keys.iter()
            .map(|k| (k.storage_key().to_owned(), k.policy().capacity()))
            .collect()
    }

    #[test]
    fn a_tier_replaces_in_place_and_adds_at_the_end() {
        let set = PolicySet::new([user_policy("a", 1), user_policy("b", 2)])
            .expect("set")
            .with_tier("gold", [user_policy("extra", 9), user_policy("a", 10)])
            .expect("tier");
        let gold = RequestContext::new().user("u").tier("gold");
        assert_eq!(
            names_and_limits(&set.keys_for(&gold)),
            [("a:u".into(), 10), ("b:u".into(), 2), ("extra:u".into(), 9)]
        );
        // No tier, or one the set does not know: the defaults.
        for ctx in [
            RequestContext::new().user("u"),
            RequestContext::new().user("u").tier("x"),
        ] {
            assert_eq!(
                names_and_limits(&set.keys_for(&ctx)),
                [("a:u".into(), 1), ("b:u".into(), 2)]
            );
        }
        assert_eq!(set.tiers().collect::<Vec<_>>(), ["gold"]);
        // A default added later reaches the tiers; a tier twice, or a bad name, is refused.
        let set = set.with(0, user_policy("first", 5)).expect("a new name");
        assert_eq!(set.policies_for(Some("gold"))[0].name(), "first");
        assert!(set.clone().with_tier("gold", []).is_err());
        assert!(set.with_tier("no spaces", []).is_err());
    }

    #[test]
    fn shadow_policies_are_kept_apart() {
        let set = PolicySet::new([
            user_policy("p", 5),
            user_policy("p-shadow", 1).with_mode(Mode::Shadow),
        ])
        .expect("set")
        .with_tier("trial", [user_policy("p", 5).with_mode(Mode::Shadow)])
        .expect("tier");
        let ctx = RequestContext::new().user("u");
        assert_eq!(names_and_limits(&set.keys_for(&ctx)), [("p:u".into(), 5)]);
        let shadow = set.shadow_keys_for(&ctx);
        assert_eq!(names_and_limits(&shadow), [("p-shadow~shadow:u".into(), 1)]);
        // In shadow mode a policy counts on a counter of its own, not the enforced one's.
        let trial = ctx.tier("trial");
        assert!(set.keys_for(&trial).is_empty());
        let shadow: Vec<_> = names_and_limits(&set.shadow_keys_for(&trial));
        assert_eq!(
            shadow,
            [("p~shadow:u".into(), 5), ("p-shadow~shadow:u".into(), 1)]
        );
    }

    #[test]
    fn a_dimension_policy_counts_per_value() {
        let per_merchant = Policy::per_dimension(
            "per-merchant",
            "merchant",
            Algorithm::sliding_window(3, secs(60)),
        )
        .expect("valid");
        assert!(
            Policy::new(
                "x",
                Scope::Dimension,
                Algorithm::sliding_window(3, secs(60))
            )
            .is_err()
        );
        assert!(
            Policy::per_dimension("x", "bad name", Algorithm::sliding_window(3, secs(60))).is_err()
        );
        let set = PolicySet::new([per_merchant]).expect("set");
        let dims = [("tenant", "t1"), ("merchant", "m{1}")];
        let keys = set.keys_for(&RequestContext::new().dimensions(&dims));
        assert_eq!(
            names_and_limits(&keys),
            [("per-merchant:m%7B1%7D".into(), 3)]
        );
        assert!(set.keys_for(&RequestContext::new().user("u")).is_empty());
        assert!(!Scope::Dimension.is_shared());
    }
}
