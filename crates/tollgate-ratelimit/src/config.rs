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
//! ```

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Algorithm, Error, Policy, PolicySet, Scope};

/// A list of policies; `Default` is a route-agnostic table (global, per user, burst) to which
/// an application adds limits for its own sensitive endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The policies, in the order they are reported.
    #[serde(rename = "policy", default)]
    pub policies: Vec<PolicyConfig>,
}

/// One policy as written in configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Unique name, 1–64 characters of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// `global`, `user`, `ip` or `endpoint`.
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
        let policy = Policy::new(&self.name, self.scope, algorithm)?;
        Ok(match &self.endpoint {
            Some(endpoint) => policy.for_endpoint(endpoint),
            None => policy,
        })
    }
}

impl RateLimitConfig {
    /// Validates every entry into a [`PolicySet`].
    pub fn into_policy_set(self) -> Result<PolicySet, Error> {
        let policies = self
            .policies
            .iter()
            .map(PolicyConfig::to_policy)
            .collect::<Result<Vec<_>, _>>()?;
        PolicySet::new(policies)
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
}
