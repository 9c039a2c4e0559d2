//! A serde-deserializable policy table, for TOML or any other serde format.
//!
//! # Example
//!
//! ```
//! use tollgate_ratelimit::config::RateLimitConfig;
//!
//! let config: RateLimitConfig = serde_json::from_str(r#"{ "policy": [
//!     { "name": "per-ip", "scope": "ip", "algorithm": "sliding-window",
//!       "limit": 300, "window": "1m" },
//!     { "name": "burst", "scope": "user", "algorithm": "token-bucket",
//!       "limit": 20, "window": "1s", "burst": 50 }
//! ]}"#).unwrap();
//! let set = config.into_policy_set()?;
//! assert_eq!(set.policies()[1].capacity(), 50);
//! # Ok::<(), tollgate_ratelimit::Error>(())
//! ```
//!
//! In TOML (the server's `TOLLGATE_CONFIG` file) the same table reads:
//!
//! ```toml
//! [[policy]]
//! name = "payments"
//! scope = "user"
//! algorithm = "sliding-window"
//! limit = 10
//! window = "60s"
//! endpoint = "POST /api/v1/payments"
//!
//! # Tiers: each entry replaces the default policy of its name (only the fields given change)
//! # or, under a new name, adds a policy.
//! [tier.premium.policy.payments]
//! limit = 100
//!
//! [tier.trial.policy.burst]
//! mode = "shadow"
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Algorithm, Error, Mode, Policy, PolicySet, Scope};

/// A list of policies; `Default` is a route-agnostic table (global, per user, burst) to which
/// an application adds limits for its own sensitive endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The policies, in the order they are reported.
    #[serde(rename = "policy", default)]
    pub policies: Vec<PolicyConfig>,
    /// The tiers, by name.
    #[serde(rename = "tier", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tiers: BTreeMap<String, TierConfig>,
}

/// One tier: policies that replace the defaults of the same name or add to them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// By policy name: the fields that differ from the default of that name, or a whole new
    /// policy.
    #[serde(default)]
    pub policy: BTreeMap<String, PolicyOverride>,
}

/// A tier's entry for one policy: every field optional. Over a default policy of the same name
/// the given fields replace its own; under a new name, `scope`, `algorithm`, `limit` and `window`
/// are required.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverride {
    /// As [`PolicyConfig::scope`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// As [`PolicyConfig::algorithm`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<AlgorithmKind>,
    /// As [`PolicyConfig::limit`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// As [`PolicyConfig::window`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "write_optional_duration",
        deserialize_with = "read_optional_duration"
    )]
    pub window: Option<Duration>,
    /// As [`PolicyConfig::burst`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// As [`PolicyConfig::endpoint`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// As [`PolicyConfig::dimension`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimension: Option<String>,
    /// As [`PolicyConfig::mode`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

impl PolicyOverride {
    /// The policy named `name` this entry makes, over `base` (the default of that name, if any).
    pub fn apply(&self, name: &str, base: Option<&PolicyConfig>) -> Result<PolicyConfig, Error> {
        let missing = |field: &str| {
            Error::invalid_policy(
                name,
                format!("`{field}` is required for a policy the defaults do not have"),
            )
        };
        let base = match base {
            Some(base) => base.clone(),
            None => PolicyConfig {
                name: name.to_owned(),
                scope: self.scope.ok_or_else(|| missing("scope"))?,
                algorithm: self.algorithm.ok_or_else(|| missing("algorithm"))?,
                limit: self.limit.ok_or_else(|| missing("limit"))?,
                window: self.window.ok_or_else(|| missing("window"))?,
                burst: None,
                endpoint: None,
                dimension: None,
                mode: Mode::Enforce,
            },
        };
        Ok(PolicyConfig {
            name: base.name,
            scope: self.scope.unwrap_or(base.scope),
            algorithm: self.algorithm.unwrap_or(base.algorithm),
            limit: self.limit.unwrap_or(base.limit),
            window: self.window.unwrap_or(base.window),
            burst: self.burst.or(base.burst),
            endpoint: self.endpoint.clone().or(base.endpoint),
            dimension: self.dimension.clone().or(base.dimension),
            mode: self.mode.unwrap_or(base.mode),
        })
    }
}

/// One policy as written in configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Unique name, 1–64 characters of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// `global`, `user`, `ip`, `endpoint` or `dimension` (with `dimension` naming it).
    pub scope: Scope,
    /// `sliding-window`, `sliding-log` or `token-bucket`.
    pub algorithm: AlgorithmKind,
    /// Requests per window; for a token bucket, tokens added per window.
    pub limit: u64,
    /// The window (`"60s"`, `"1m"`, `"500ms"`); for a token bucket, the refill period.
    #[serde(serialize_with = "write_duration", deserialize_with = "read_duration")]
    pub window: Duration,
    /// Token-bucket capacity; defaults to `limit`. Not allowed for the other algorithms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// Restricts the policy to one endpoint, `METHOD /route/template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// For `scope = "dimension"`: the dimension counted per (e.g. `merchant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimension: Option<String>,
    /// `enforce` (the default) or `shadow`: counted and reported, never refusing.
    #[serde(default, skip_serializing_if = "is_enforce")]
    pub mode: Mode,
}

fn is_enforce(mode: &Mode) -> bool {
    *mode == Mode::Enforce
}

/// The algorithm names accepted in configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlgorithmKind {
    /// [`Algorithm::SlidingWindow`].
    SlidingWindow,
    /// [`Algorithm::SlidingLog`].
    SlidingLog,
    /// [`Algorithm::TokenBucket`].
    TokenBucket,
}

impl PolicyConfig {
    /// A sliding-window policy of `limit` requests per `window`.
    pub fn sliding_window(name: &str, scope: Scope, limit: u64, window: Duration) -> Self {
        PolicyConfig {
            name: name.to_owned(),
            scope,
            algorithm: AlgorithmKind::SlidingWindow,
            limit,
            window,
            burst: None,
            endpoint: None,
            dimension: None,
            mode: Mode::Enforce,
        }
    }

    /// A token bucket refilled with `limit` tokens per `window`, holding `burst`.
    pub fn token_bucket(
        name: &str,
        scope: Scope,
        limit: u64,
        window: Duration,
        burst: u64,
    ) -> Self {
        PolicyConfig {
            algorithm: AlgorithmKind::TokenBucket,
            burst: Some(burst),
            ..PolicyConfig::sliding_window(name, scope, limit, window)
        }
    }

    /// This policy restricted to one endpoint, `METHOD /route/template`.
    pub fn for_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Validates the entry into a [`Policy`]; errors name the policy and the field.
    pub fn to_policy(&self) -> Result<Policy, Error> {
        let algorithm = match (self.algorithm, self.burst) {
            (AlgorithmKind::TokenBucket, burst) => {
                Algorithm::token_bucket(self.limit, self.window, burst.unwrap_or(self.limit))
            }
            (_, Some(_)) => {
                return Err(Error::invalid_policy(
                    &self.name,
                    "`burst` is only valid for algorithm = \"token-bucket\"",
                ));
            }
            (AlgorithmKind::SlidingWindow, None) => {
                Algorithm::sliding_window(self.limit, self.window)
            }
            (AlgorithmKind::SlidingLog, None) => Algorithm::sliding_log(self.limit, self.window),
        };
        let policy = match (self.scope, &self.dimension) {
            (Scope::Dimension, Some(dimension)) => {
                Policy::per_dimension(&self.name, dimension, algorithm)?
            }
            (_, Some(_)) => {
                return Err(Error::invalid_policy(
                    &self.name,
                    "`dimension` is only valid for scope = \"dimension\"",
                ));
            }
            (scope, None) => Policy::new(&self.name, scope, algorithm)?,
        };
        let policy = policy.with_mode(self.mode);
        Ok(match &self.endpoint {
            Some(endpoint) => policy.for_endpoint(endpoint),
            None => policy,
        })
    }
}

impl RateLimitConfig {
    /// Validates every entry, and every tier's, into a [`PolicySet`].
    pub fn into_policy_set(self) -> Result<PolicySet, Error> {
        let policies = self
            .policies
            .iter()
            .map(PolicyConfig::to_policy)
            .collect::<Result<Vec<_>, _>>()?;
        let mut set = PolicySet::new(policies)?;
        for (tier, config) in &self.tiers {
            let policies = config
                .policy
                .iter()
                .map(|(name, entry)| {
                    let base = self.policies.iter().find(|p| p.name == *name);
                    entry.apply(name, base)?.to_policy()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| error.in_tier(tier))?;
            set = set.with_tier(tier, policies)?;
        }
        Ok(set)
    }
}

impl Default for RateLimitConfig {
    /// Global 1000/60 s and per user 100/60 s (sliding window), and a per-user token bucket of
    /// 20/s with a burst of 50. No endpoint is named: the library does not know your routes.
    fn default() -> Self {
        let minute = Duration::from_secs(60);
        RateLimitConfig {
            policies: vec![
                PolicyConfig::sliding_window("global", Scope::Global, 1000, minute),
                PolicyConfig::sliding_window("per-user", Scope::User, 100, minute),
                PolicyConfig::token_bucket("burst", Scope::User, 20, Duration::from_secs(1), 50),
            ],
            tiers: BTreeMap::new(),
        }
    }
}

fn read_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} ({e}); try \"60s\" or \"500ms\""
        ))
    })
}

fn read_optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    read_duration(deserializer).map(Some)
}

fn write_optional_duration<S: Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => write_duration(duration, serializer),
        None => serializer.serialize_none(),
    }
}

fn write_duration<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_round_trips_through_toml() {
        let text = toml::to_string(&RateLimitConfig::default()).expect("serialize");
        let back: RateLimitConfig = toml::from_str(&text).expect("parse");
        assert_eq!(back, RateLimitConfig::default());
        let set = back.into_policy_set().expect("valid");
        let names: Vec<_> = set.policies().iter().map(|p| p.name().to_owned()).collect();
        assert_eq!(names, ["global", "per-user", "burst"]);
    }

    #[test]
    fn errors_name_the_field() {
        let bad = "[[policy]]\nname = \"x\"\nscope = \"user\"\nalgorithm = \"sliding-window\"\nlimit = 5\nwindow = \"soon\"\n";
        let err = toml::from_str::<RateLimitConfig>(bad).expect_err("bad window");
        assert!(err.to_string().contains("invalid duration"), "{err}");

        let unknown = "[[policy]]\nname = \"x\"\nscope = \"galaxy\"\nalgorithm = \"sliding-window\"\nlimit = 5\nwindow = \"1s\"\n";
        assert!(toml::from_str::<RateLimitConfig>(unknown).is_err());

        let burst = "[[policy]]\nname = \"x\"\nscope = \"user\"\nalgorithm = \"sliding-window\"\nlimit = 5\nwindow = \"1s\"\nburst = 9\n";
        let config: RateLimitConfig = toml::from_str(burst).expect("parses");
        let err = config.into_policy_set().expect_err("burst on a window");
        assert!(err.to_string().contains("`burst`"), "{err}");
    }

    #[test]
    fn tiers_override_fields_and_add_policies() {
        let text = r#"
[[policy]]
name = "per-user"
scope = "user"
algorithm = "sliding-window"
limit = 100
window = "60s"

[tier.premium.policy.per-user]
limit = 1000

[tier.premium.policy.per-merchant]
scope = "dimension"
dimension = "merchant"
algorithm = "token-bucket"
limit = 5
window = "1s"

[tier.trial.policy.per-user]
mode = "shadow"
"#;
        let config: RateLimitConfig = toml::from_str(text).expect("parses");
        let set = config.clone().into_policy_set().expect("valid");
        let premium = set.policies_for(Some("premium"));
        assert_eq!(premium[0].capacity(), 1000);
        assert_eq!(
            premium[0].window(),
            Duration::from_secs(60),
            "kept from the default"
        );
        assert_eq!(premium[1].dimension(), Some("merchant"));
        assert_eq!(set.policies_for(Some("trial"))[0].mode(), Mode::Shadow);
        assert_eq!(set.policies()[0].capacity(), 100);
        let back: RateLimitConfig =
            toml::from_str(&toml::to_string(&config).expect("serialize")).expect("parse");
        assert_eq!(back, config);
    }

    #[test]
    fn a_tiers_errors_name_the_tier_and_the_field() {
        let new_policy = "[tier.gold.policy.extra]\nlimit = 5\n";
        let config: RateLimitConfig = toml::from_str(new_policy).expect("parses");
        let err = config.into_policy_set().expect_err("no scope").to_string();
        assert!(
            err.contains("`scope`") && err.contains("tier `gold`"),
            "{err}"
        );
        let stray = "[[policy]]\nname = \"x\"\nscope = \"user\"\nalgorithm = \"sliding-window\"\nlimit = 5\nwindow = \"1s\"\ndimension = \"merchant\"\n";
        let config: RateLimitConfig = toml::from_str(stray).expect("parses");
        let err = config
            .into_policy_set()
            .expect_err("a dimension on a user policy");
        assert!(err.to_string().contains("`dimension`"), "{err}");
    }
}
