//! Configuration: environment variables mirrored by command-line flags (flags win), plus an
//! optional TOML file (`TOLLGATE_CONFIG`) for the policy table, timeouts and tuning. Every
//! mistake is a start-up error naming the setting.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Deserializer};
use tollgate_ratelimit::config::{PolicyConfig, RateLimitConfig};
use tollgate_ratelimit::{PolicySet, Scope};

use crate::paths;

/// The server's settings.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "payments-server",
    about = "The Tollgate payments server",
    version
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:8000")]
    pub bind_addr: SocketAddr,
    /// Log filter (`info`, `debug`, `tollgate=debug,info`, …).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Comma-separated `key:user_id` pairs.
    #[arg(long, env = "API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// One API key, for user `default`.
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// PostgreSQL URL: payments, idempotency records and the audit trail live there.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The PostgreSQL schema holding Tollgate's tables (created if missing).
    #[arg(long, env = "DATABASE_SCHEMA", default_value = "tollgate")]
    pub database_schema: String,
    /// Redis URL: rate-limit counters (and idempotency records when there is no database).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key this server writes.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "tollgate")]
    pub redis_key_prefix: String,
    /// TOML file with the policy table, timeouts and tuning (see docs/operations.md).
    #[arg(long = "config", env = "TOLLGATE_CONFIG")]
    pub config_file: Option<PathBuf>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// An API key and the user it authenticates.
#[derive(Clone)]
pub struct ApiKey {
    pub(crate) key: Vec<u8>,
    pub(crate) user: String,
}

impl ApiKey {
    /// `key` authenticates `user`.
    pub fn new(key: impl Into<Vec<u8>>, user: impl Into<String>) -> Self {
        ApiKey {
            key: key.into(),
            user: user.into(),
        }
    }
}

// Keys are secrets: never print them.
impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The development key accepted when no key is configured.
pub const DEV_KEY: &str = "test-api-key";

impl Config {
    /// The API keys, or an error naming the setting; `(keys, development_mode)`.
    pub fn keys(&self) -> Result<(Vec<ApiKey>, bool), String> {
        let mut keys = Vec::new();
        if let Some(list) = &self.api_keys {
            for (i, pair) in list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .enumerate()
            {
                let (key, user) = pair
                    .split_once(':')
                    .ok_or_else(|| format!("API_KEYS entry {} is not `key:user_id`", i + 1))?;
                if key.is_empty() || user.is_empty() {
                    return Err(format!("API_KEYS entry {} has an empty key or user", i + 1));
                }
                keys.push(ApiKey {
                    key: key.as_bytes().to_vec(),
                    user: user.to_owned(),
                });
            }
        }
        if let Some(key) = self.api_key.as_deref().filter(|k| !k.is_empty()) {
            keys.push(ApiKey {
                key: key.as_bytes().to_vec(),
                user: "default".to_owned(),
            });
        }
        if keys.is_empty() {
            keys.push(ApiKey {
                key: DEV_KEY.as_bytes().to_vec(),
                user: "test".to_owned(),
            });
            return Ok((keys, true));
        }
        Ok((keys, false))
    }

    /// The TOML file's settings, or the defaults when there is no file.
    pub fn file(&self) -> Result<FileConfig, String> {
        let Some(path) = &self.config_file else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("TOLLGATE_CONFIG {}: {e}", path.display()))?;
        FileConfig::parse(&text).map_err(|e| format!("TOLLGATE_CONFIG {}: {e}", path.display()))
    }
}

/// What the TOML file holds. Unknown fields are errors (a typo must not silently keep a
/// default).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// The rate-limit policy table; the seed's table when absent.
    #[serde(rename = "policy")]
    pub(crate) policies: Option<Vec<PolicyConfig>>,
    pub(crate) rate_limit: RateLimitTuning,
    pub(crate) timeouts: Timeouts,
    pub(crate) idempotency: IdempotencyTuning,
    pub(crate) processor: ProcessorTuning,
    pub(crate) breaker: BreakerTuning,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    pub(crate) trusted_proxies: Vec<IpAddr>,
}

impl FileConfig {
    /// Parses and validates a TOML file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let rates = [
            ("processor.decline_rate", self.processor.decline_rate),
            ("processor.failure_rate", self.processor.failure_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        if !(1..=100).contains(&self.breaker.failure_rate_threshold) {
            return Err("breaker.failure_rate_threshold must be 1–100".into());
        }
        let positive = [
            ("timeouts.header_read", self.timeouts.header_read),
            ("timeouts.request", self.timeouts.request),
            ("idempotency.lease", self.idempotency.lease),
            ("idempotency.ttl", self.idempotency.ttl),
            ("breaker.wait_in_open", self.breaker.wait_in_open),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(format!("{name} must be more than zero"));
            }
        }
        self.policy_set().map(drop)
    }

    /// The rate-limit policies, validated.
    pub(crate) fn policy_set(&self) -> Result<PolicySet, String> {
        let config = match &self.policies {
            Some(policies) => RateLimitConfig {
                policies: policies.clone(),
            },
            None => default_policies(),
        };
        config.into_policy_set().map_err(|e| e.to_string())
    }
}

/// The server's default table: the library's route-agnostic defaults (global 1000/60 s, per user
/// 100/60 s, burst 20/s holding 50) with the payments endpoint's own limit, 10/60 s per user.
pub(crate) fn default_policies() -> RateLimitConfig {
    let mut config = RateLimitConfig::default();
    let payments =
        PolicyConfig::sliding_window("payments", Scope::User, 10, Duration::from_secs(60))
            .for_endpoint(paths::endpoint(&http::Method::POST, paths::PAYMENTS));
    config.policies.insert(2, payments);
    config
}

/// What the limiter does when Redis is unreachable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum FailureModeName {
    /// Admit requests.
    FailOpen,
    /// Refuse requests with `Retry-After`.
    FailClosed,
    /// Enforce the limits per process with an in-memory limiter.
    #[default]
    LocalFallback,
    /// Answer `503`.
    Error,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RateLimitTuning {
    pub(crate) failure_mode: FailureModeName,
    #[serde(deserialize_with = "duration")]
    pub(crate) redis_timeout: Duration,
}

impl Default for RateLimitTuning {
    fn default() -> Self {
        RateLimitTuning {
            failure_mode: FailureModeName::LocalFallback,
            redis_timeout: Duration::from_millis(250),
        }
    }
}

/// Deadlines of a connection and a request.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// A client must send its request head within this.
    #[serde(deserialize_with = "duration")]
    pub header_read: Duration,
    /// Reading the body and answering must end within this.
    #[serde(deserialize_with = "duration")]
    pub request: Duration,
    /// How long shutdown waits for requests in flight.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read: Duration::from_secs(10),
            request: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct IdempotencyTuning {
    /// How long a duplicate waits for the request in flight before `409`.
    #[serde(deserialize_with = "duration")]
    pub(crate) wait: Duration,
    /// How long an owner holds a key before another request may take it over.
    #[serde(deserialize_with = "duration")]
    pub(crate) lease: Duration,
    /// How long results are kept.
    #[serde(deserialize_with = "duration")]
    pub(crate) ttl: Duration,
}

impl Default for IdempotencyTuning {
    fn default() -> Self {
        IdempotencyTuning {
            wait: Duration::from_secs(5),
            lease: Duration::from_secs(30),
            ttl: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ProcessorTuning {
    /// Simulated processing time per charge.
    #[serde(deserialize_with = "duration")]
    pub(crate) latency: Duration,
    /// Share of charges declined (0–1).
    pub(crate) decline_rate: f64,
    /// Share of charges failing with a processor error after charging (0–1).
    pub(crate) failure_rate: f64,
}

impl Default for ProcessorTuning {
    fn default() -> Self {
        ProcessorTuning {
            latency: Duration::from_millis(20),
            decline_rate: 0.0,
            failure_rate: 0.0,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct BreakerTuning {
    /// Calls in the breaker's sliding window.
    pub(crate) window_calls: u32,
    /// Open at this failure percentage.
    pub(crate) failure_rate_threshold: u8,
    /// No decision before this many calls.
    pub(crate) minimum_calls: u32,
    /// How long the breaker stays open before probing.
    #[serde(deserialize_with = "duration")]
    pub(crate) wait_in_open: Duration,
}

impl Default for BreakerTuning {
    fn default() -> Self {
        BreakerTuning {
            window_calls: 50,
            failure_rate_threshold: 50,
            minimum_calls: 20,
            wait_in_open: Duration::from_secs(30),
        }
    }
}

/// `"250ms"`, `"30s"`, `"24h"`.
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("payments-server").chain(args.iter().copied()))
            .expect("parses")
    }

    #[test]
    fn keys_from_flags_and_development_mode() {
        let (keys, dev) = config(&["--api-keys", "k1:alice, k2:bob", "--api-key", "k3"])
            .keys()
            .expect("valid");
        let users: Vec<_> = keys.iter().map(|k| k.user.as_str()).collect();
        assert_eq!((users, dev), (vec!["alice", "bob", "default"], false));
        let (keys, dev) = config(&[]).keys().expect("valid");
        assert!(dev);
        assert_eq!(keys[0].user, "test");
        let err = config(&["--api-keys", "k1:alice,oops"])
            .keys()
            .expect_err("invalid");
        assert!(err.contains("API_KEYS entry 2"), "{err}");
        assert!(
            !format!("{:?}", keys[0]).contains(DEV_KEY),
            "keys never reach Debug output"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1_000))]

        /// Any file text: a configuration or an error message, never a panic.
        #[test]
        fn hostile_config_files(text in proptest::prelude::any::<String>(), number in proptest::prelude::any::<f64>(), duration in "[0-9]{0,25}(ns|ms|s|h|d|y)?") {
            let _ = FileConfig::parse(&text);
            let section = format!("[processor]\ndecline_rate = {number:?}\n[timeouts]\nrequest = \"{duration}\"\n");
            match FileConfig::parse(&section) {
                Ok(config) => {
                    proptest::prop_assert!((0.0..=1.0).contains(&config.processor.decline_rate));
                    proptest::prop_assert!(!config.timeouts.request.is_zero());
                }
                Err(error) => proptest::prop_assert!(!error.is_empty()),
            }
        }
    }

    #[test]
    fn toml_file() {
        let file = FileConfig::parse(
            r#"
            trusted_proxies = ["10.0.0.1"]
            [timeouts]
            request = "5s"
            [processor]
            decline_rate = 0.25
            [[policy]]
            name = "payments"
            scope = "user"
            algorithm = "sliding-window"
            limit = 1000
            window = "60s"
            endpoint = "POST /api/v1/payments"
            "#,
        )
        .expect("valid");
        assert_eq!(file.timeouts.request, Duration::from_secs(5));
        assert_eq!(file.timeouts.header_read, Duration::from_secs(10));
        assert_eq!(file.policy_set().expect("valid").policies().len(), 1);
        assert_eq!(
            FileConfig::default()
                .policy_set()
                .expect("valid")
                .policies()
                .len(),
            4
        );

        let errors = [
            ("[timeouts]\nrequest = \"soon\"", "soon"),
            ("[timeouts]\nrequets = \"5s\"", "requets"),
            ("[processor]\ndecline_rate = 2.0", "processor.decline_rate"),
            ("[timeouts]\nrequest = \"0s\"", "timeouts.request"),
            (
                "[[policy]]\nname = \"x\"\nscope = \"user\"\nalgorithm = \"sliding-window\"\nlimit = 0\nwindow = \"1s\"",
                "x",
            ),
        ];
        for (text, named) in errors {
            let error = FileConfig::parse(text).expect_err(text);
            assert!(error.contains(named), "{text}: {error}");
        }
    }
}
