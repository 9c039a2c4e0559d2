//! Policies: what is limited (the [`Scope`]), how (the [`Algorithm`]) and where (an endpoint).
//!
//! A [`PolicySet`] turns one request's [`RequestContext`] into the [`PolicyKey`]s that a
//! [`RateLimiter`](crate::RateLimiter) decides together.
//!
//! # Example
//!
//! ```
//! use std::net::IpAddr;
//! use std::time::Duration;
//! use tollgate_ratelimit::{Algorithm, Policy, PolicySet, RequestContext, Scope};
//!
//! let set = PolicySet::new([
//!     Policy::new("per-ip", Scope::Ip, Algorithm::sliding_window(60, Duration::from_secs(60)))?,
//!     Policy::new("payments", Scope::User, Algorithm::sliding_window(10, Duration::from_secs(60)))?
//!         .for_endpoint("POST /api/v1/payments"),
//! ])?;
//!
//! let ip: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
//! let ctx = RequestContext::new().user("alice").ip(ip).endpoint("GET /api/v1/rate-limits");
//! let keys = set.keys_for(&ctx);
//! // The payments policy does not apply to this endpoint; IPv6 is grouped by /64.
//! assert_eq!(keys.len(), 1);
//! assert_eq!(keys[0].storage_key(), "per-ip:2001:db8:1:2::/64");
//! # Ok::<(), tollgate_ratelimit::Error>(())
//! ```

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::duration_to_micros;
use crate::{Error, RequestContext};

/// The largest `limit × window-in-µs` (and GCRA `burst × interval`) a policy may have: 2^51.
///
/// Bounding the products keeps every intermediate value of the arithmetic below 2^53, so the Redis
/// Lua scripts (IEEE doubles) compute exactly what the Rust code computes. 2^51 µs·requests is,
/// for example, 100 000 requests per hour or 1 000 requests per day with room to spare.
pub const MAX_LIMIT_WINDOW_PRODUCT: u64 = 1 << 51;

/// What a policy counts against: one shared counter, or one counter per user, IP or endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// One counter for every request.
    Global,
    /// One counter per authenticated user; requests without a user are not counted.
    User,
    /// One counter per client IP address; IPv6 addresses are grouped by their /64 prefix, the
    /// unit a single subscriber is usually given.
    Ip,
    /// One counter per endpoint (method and route template), shared by all callers.
    Endpoint,
    /// One counter per value of a dimension the application names (a merchant, a tenant),
    /// given with [`RequestContext::dimensions`](crate::RequestContext::dimensions); requests
    /// without a value are not counted. Made with [`Policy::per_dimension`].
    Dimension,
}

impl Scope {
    /// The scope's name as it appears in configuration and in `GET /api/v1/rate-limits`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::User => "user",
            Scope::Ip => "ip",
            Scope::Endpoint => "endpoint",
            Scope::Dimension => "dimension",
        }
    }

    /// Whether every caller shares the scope's counter (`Global`, `Endpoint`). Its remaining
    /// count is then a measure of everyone's traffic, which
    /// [`Decision::disclosed`](crate::Decision::disclosed) never offers to a caller.
    pub fn is_shared(self) -> bool {
        matches!(self, Scope::Global | Scope::Endpoint)
    }
}

/// How a policy counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Algorithm {
    /// Sliding-window counter: two counters per key (this window and the previous one), the
    /// previous weighted by how much of it still overlaps the sliding window. O(1) state.
    ///
    /// Error bound: every aligned window admits at most `limit`; any window of length `window`
    /// admits fewer than `2 × limit` (the worst case needs the previous window's requests all at
    /// its very end). See the [guide](crate::_guide) for the derivation.
    SlidingWindow {
        /// Requests admitted per window.
        limit: u64,
        /// The window length.
        window: Duration,
    },
    /// Sliding log: one timestamp per admitted request, exact (never more than `limit` in any
    /// window), O(limit) state per key. For small limits where exactness matters.
    SlidingLog {
        /// Requests admitted per window.
        limit: u64,
        /// The window length.
        window: Duration,
    },
    /// Token bucket as GCRA: one timestamp per key. Refills `rate` tokens per `period`, holds at
    /// most `burst`.
    TokenBucket {
        /// Tokens added per period.
        rate: u64,
        /// The refill period.
        period: Duration,
        /// Bucket capacity: how many requests may arrive at once.
        burst: u64,
    },
}

impl Algorithm {
    /// A sliding-window counter admitting `limit` requests per `window`.
    pub fn sliding_window(limit: u64, window: Duration) -> Self {
        Algorithm::SlidingWindow { limit, window }
    }

    /// An exact sliding log admitting `limit` requests per `window`.
    pub fn sliding_log(limit: u64, window: Duration) -> Self {
        Algorithm::SlidingLog { limit, window }
    }

    /// A token bucket refilling `rate` tokens per `period` with room for `burst`.
    pub fn token_bucket(rate: u64, period: Duration, burst: u64) -> Self {
        Algorithm::TokenBucket {
            rate,
            period,
            burst,
        }
    }

    /// The algorithm's name as it appears in configuration and in `GET /api/v1/rate-limits`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Algorithm::SlidingWindow { .. } => "sliding-window",
            Algorithm::SlidingLog { .. } => "sliding-log",
            Algorithm::TokenBucket { .. } => "token-bucket",
        }
    }
}

/// The validated, integer form of an [`Algorithm`] that the arithmetic runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Quota {
    SlidingWindow {
        limit: u64,
        window: u64,
    },
    SlidingLog {
        limit: u64,
        window: u64,
    },
    /// `interval` is the emission interval T (µs per token); `tolerance` is τ = burst × T.
    Gcra {
        interval: u64,
        tolerance: u64,
    },
}

impl Quota {
    fn new(name: &str, algorithm: Algorithm) -> Result<Self, Error> {
        let check_window = |limit: u64, window: Duration| -> Result<u64, Error> {
            let window_us = duration_to_micros(window);
            if limit == 0 {
                return Err(Error::invalid_policy(name, "`limit` must be at least 1"));
            }
            if window_us < 1_000 {
                return Err(Error::invalid_policy(
                    name,
                    "`window` must be at least 1 ms",
                ));
            }
            if limit.saturating_mul(window_us) > MAX_LIMIT_WINDOW_PRODUCT {
                return Err(Error::invalid_policy(
                    name,
                    "`limit` × `window` is too large (at most 2^51 requests·µs)",
                ));
            }
            Ok(window_us)
        };
        Ok(match algorithm {
            Algorithm::SlidingWindow { limit, window } => Quota::SlidingWindow {
                limit,
                window: check_window(limit, window)?,
            },
            Algorithm::SlidingLog { limit, window } => Quota::SlidingLog {
                limit,
                window: check_window(limit, window)?,
            },
            Algorithm::TokenBucket {
                rate,
                period,
                burst,
            } => {
                let period_us = check_window(rate, period).map_err(|_| {
                    Error::invalid_policy(
                        name,
                        "`rate` must be at least 1 and `period` at least 1 ms",
                    )
                })?;
                if burst == 0 {
                    return Err(Error::invalid_policy(name, "`burst` must be at least 1"));
                }
                // The emission interval is rounded down to a whole microsecond: a rate that does
                // not divide its period runs < 1 µs per token fast, a fixed and documented
                // deviation rather than a drift that accumulates.
                let interval = period_us / rate;
                if interval == 0 {
                    return Err(Error::invalid_policy(
                        name,
                        "`rate` is above one token per microsecond",
                    ));
                }
                let tolerance = burst.saturating_mul(interval);
                if tolerance > MAX_LIMIT_WINDOW_PRODUCT {
                    return Err(Error::invalid_policy(
                        name,
                        "`burst` × interval is too large",
                    ));
                }
                Quota::Gcra {
                    interval,
                    tolerance,
                }
            }
        })
    }

    /// The most the policy admits at once (the `q` of `RateLimit-Policy`).
    pub(crate) fn capacity(self) -> u64 {
        match self {
            Quota::SlidingWindow { limit, .. } | Quota::SlidingLog { limit, .. } => limit,
            Quota::Gcra {
                interval,
                tolerance,
            } => tolerance / interval,
        }
    }

    /// The time in µs over which the capacity is granted (a token bucket's full refill time).
    pub(crate) fn window_micros(self) -> u64 {
        match self {
            Quota::SlidingWindow { window, .. } | Quota::SlidingLog { window, .. } => window,
            Quota::Gcra { tolerance, .. } => tolerance,
        }
    }
}

/// One named rate-limit rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    name: Arc<str>,
    scope: Scope,
    algorithm: Algorithm,
    quota: Quota,
    /// `quota.capacity()`, cached: it divides, and it is read on every decision.
    capacity: u64,
    endpoint: Option<Arc<str>>,
    /// The dimension a [`Scope::Dimension`] policy counts per.
    dimension: Option<Arc<str>>,
    mode: Mode,
}

/// Whether a policy refuses what it would deny.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Decided with the request's other policies; a denial refuses the request.
    #[default]
    Enforce,
    /// Decided on its own counter after the enforced policies admitted the request, and only
    /// reported ([`would_deny`](crate::shadow::would_deny)): it never refuses a request and
    /// never consumes an enforced policy's quota. For trying a limit on real traffic first.
    Shadow,
}

impl Mode {
    /// The mode's name as it appears in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

/// Whether `name` is 1–64 characters of `[A-Za-z0-9_.-]` (policy, tier and dimension names:
/// they appear in storage keys and HTTP headers).
pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl Policy {
    /// A policy named `name` (1–64 characters of `[A-Za-z0-9_.-]`: it appears in storage keys
    /// and in HTTP headers), counting per `scope` with `algorithm`.
    ///
    /// A [`Scope::Dimension`] policy is made with [`per_dimension`](Self::per_dimension).
    pub fn new(name: &str, scope: Scope, algorithm: Algorithm) -> Result<Self, Error> {
        if scope == Scope::Dimension {
            return Err(Error::invalid_policy(
                name,
                "`scope = \"dimension\"` needs a `dimension` to count per",
            ));
        }
        Policy::build(name, scope, algorithm)
    }

    /// A policy counting per value of `dimension` (1–64 characters of `[A-Za-z0-9_.-]`, e.g.
    /// `merchant`): one counter per value that [`RequestContext::dimensions`] gives it.
    ///
    /// [`RequestContext::dimensions`]: crate::RequestContext::dimensions
    pub fn per_dimension(name: &str, dimension: &str, algorithm: Algorithm) -> Result<Self, Error> {
        if !is_valid_name(dimension) {
            return Err(Error::invalid_policy(
                name,
                "`dimension` must be 1-64 characters of [A-Za-z0-9_.-]",
            ));
        }
        let mut policy = Policy::build(name, Scope::Dimension, algorithm)?;
        policy.dimension = Some(dimension.into());
        Ok(policy)
    }

    fn build(name: &str, scope: Scope, algorithm: Algorithm) -> Result<Self, Error> {
        if !is_valid_name(name) {
            return Err(Error::invalid_policy(
                name,
                "`name` must be 1-64 characters of [A-Za-z0-9_.-]",
            ));
        }
        let quota = Quota::new(name, algorithm)?;
        Ok(Policy {
            quota,
            capacity: quota.capacity(),
            name: name.into(),
            scope,
            algorithm,
            endpoint: None,
            dimension: None,
            mode: Mode::Enforce,
        })
    }

    /// This policy in `mode`: [`Mode::Shadow`] to count what it would deny without refusing.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Whether the policy refuses ([`Mode::Enforce`]) or only reports ([`Mode::Shadow`]).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The dimension a [`Scope::Dimension`] policy counts per.
    pub fn dimension(&self) -> Option<&str> {
        self.dimension.as_deref()
    }

    /// Restricts the policy to one endpoint, written as `METHOD /route/template` (the same string
    /// passed to [`RequestContext::endpoint`]).
    pub fn for_endpoint(mut self, endpoint: &str) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy's name, shared.
    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// What the policy counts against.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// How the policy counts.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The endpoint the policy is restricted to, if any.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The most requests the policy admits at once: the limit, or a token bucket's burst.
    #[inline]
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The window over which [`capacity`](Self::capacity) is granted; for a token bucket, the time
    /// to refill from empty to full.
    pub fn window(&self) -> Duration {
        Duration::from_micros(self.quota.window_micros())
    }

    #[inline]
    pub(crate) fn quota(&self) -> Quota {
        self.quota
    }

    /// The key this policy uses for `ctx`, or `None` when it does not apply (another endpoint, or
    /// the scope's subject is missing, such as a per-user policy on an anonymous request).
    pub fn key_for(self: &Arc<Self>, ctx: &RequestContext<'_>) -> Option<PolicyKey> {
        if let Some(endpoint) = &self.endpoint
            && ctx.endpoint != Some(&**endpoint)
        {
            return None;
        }
        let ip_text;
        let subject = match self.scope {
            Scope::Global => "",
            Scope::User => ctx.user?,
            Scope::Endpoint => ctx.endpoint?,
            Scope::Dimension => ctx.dimension_value(self.dimension.as_deref()?)?,
            Scope::Ip => {
                ip_text = ip_subject(ctx.ip?);
                &ip_text
            }
        };
        Some(PolicyKey::new(Arc::clone(self), subject))
    }
}

/// Groups an address the way limits should see it: IPv4 (and IPv4-mapped IPv6) as is, IPv6 by /64.
fn ip_subject(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{prefix}/64")
            }
        },
    }
}

/// Appends `subject`, percent-encoding the characters that would break a Redis hash tag (and `%`
/// itself, so the encoding stays unambiguous): subjects are caller data.
fn push_escaped(out: &mut String, subject: &str) {
    // Nearly every subject has none of the three: copy it whole (a key is built per request).
    if !subject.bytes().any(|b| matches!(b, b'{' | b'}' | b'%')) {
        out.push_str(subject);
        return;
    }
    for c in subject.chars() {
        match c {
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            '%' => out.push_str("%25"),
            c => out.push(c),
        }
    }
}

/// One policy applied to one subject: the unit of state a limiter keeps.
#[derive(Clone, PartialEq, Eq)]
pub struct PolicyKey {
    policy: Arc<Policy>,
    storage_key: Box<str>,
    /// A 128-bit keyed hash of `storage_key`, computed once: the memory backend indexes by it,
    /// so a decision neither re-hashes nor compares strings. Two words rather than a `u128`
    /// (16-byte aligned), so a key is 40 bytes, not 48.
    hash: [u64; 2],
}

/// Two independently seeded hashers, fixed for the process, for [`PolicyKey`]'s 128-bit hash.
/// Random seeds make collisions unforgeable from outside; 128 bits make accidental ones
/// negligible (about 10^-26 for a million live keys).
fn key_hash(storage_key: &str) -> [u64; 2] {
    use std::hash::BuildHasher;
    use std::sync::OnceLock;
    static SEEDS: OnceLock<[foldhash::quality::RandomState; 2]> = OnceLock::new();
    let [a, b] = SEEDS.get_or_init(Default::default);
    [b.hash_one(storage_key), a.hash_one(storage_key)]
}

impl std::hash::Hash for PolicyKey {
    /// Equal keys have equal storage keys, so equal precomputed hashes: hashing those is
    /// consistent with `Eq` and costs no pass over the text.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.hash.hash(state);
    }
}

impl PolicyKey {
    /// The key of `policy` for `subject` (a user id, an IP group, an endpoint; empty for global).
    /// Characters that would break a Redis hash tag (`{`, `}`) are percent-encoded.
    ///
    /// A shadow policy's key is `"{policy}~shadow:{subject}"` (`~` is never in a name): its
    /// counter is its own, never an enforced policy's of the same name.
    pub fn new(policy: Arc<Policy>, subject: &str) -> Self {
        let mut storage_key = String::with_capacity(policy.name.len() + 8 + subject.len());
        storage_key.push_str(&policy.name);
        if policy.mode == Mode::Shadow {
            storage_key.push_str("~shadow");
        }
        storage_key.push(':');
        push_escaped(&mut storage_key, subject);
        PolicyKey {
            policy,
            hash: key_hash(&storage_key),
            storage_key: storage_key.into_boxed_str(),
        }
    }

    /// The policy.
    #[inline]
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// `"{policy}:{subject}"`, unique per policy name and subject; backends add their prefix.
    pub fn storage_key(&self) -> &str {
        &self.storage_key
    }

    #[inline]
    pub(crate) fn hash128(&self) -> u128 {
        (u128::from(self.hash[1]) << 64) | u128::from(self.hash[0])
    }
}

impl fmt::Debug for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PolicyKey").field(&self.storage_key).finish()
    }
}

#[cfg(test)]
mod tests;
