//! Configuration: environment variables mirrored by command-line flags (flags win), plus an
//! optional TOML file (`TOLLGATE_CONFIG`) for the policy table, timeouts and tuning. Every
//! mistake is a start-up error naming the setting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod keys;
mod tiers;
mod tuning;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser, ValueEnum};
use serde::Deserialize;
use tollgate_http::client_ip::{ForwardedHeader, IpRange};
use tollgate_ratelimit::config::{PolicyConfig, RateLimitConfig};
use tollgate_ratelimit::{PolicySet, Scope};

use crate::paths;

pub use crate::keys::cli::KeysCommand;
pub use crate::reset::LimitsCommand;
pub(crate) use keys::check_user;
pub use keys::{ApiKey, DEV_KEY};
pub use tuning::Timeouts;
pub(crate) use tuning::{
    AuditTuning, BreakerTuning, DatabaseTuning, FailureModeName, HealthTuning, IdempotencyTuning,
    LimitsTuning, LogTuning, ProcessorTuning, RateLimitTuning, RedisConnectionKind, RedisTuning,
    TelemetryTuning, TestingTuning,
};

use keys::KeySettings;
pub(crate) use tiers::{DimensionSection, TierSection, dimension_headers, tier_of_users};

/// The server's settings, from the environment and flags.
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
    /// Comma-separated `key:user_id` pairs (a key may contain `:`; the user id follows the
    /// last one). Keys are 16–256 visible ASCII characters. Prefer the environment variable or
    /// `API_KEYS_FILE` to the flag: a flag's value is in the process list, for every user of
    /// the machine to read.
    #[arg(long, env = "API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// A file of `key:user_id` pairs, one per line (or comma-separated; blank lines and lines
    /// starting with `#` are skipped): keys kept out of the environment and the process list.
    /// Instead of `API_KEYS`.
    #[arg(long, env = "API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// One API key, for user `default`.
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Where managed keys (`payments-server keys`) are kept, as digests, when there is no
    /// `DATABASE_URL` (with one, they are kept in PostgreSQL). Every replica reading the same
    /// file sees a change within two seconds.
    #[arg(long, env = "KEYS_FILE")]
    pub keys_file: Option<PathBuf>,
    /// PostgreSQL URL: payments, idempotency records and the audit trail live there. TLS as
    /// libpq: `sslmode` (disable, prefer, require, verify-ca, verify-full) and `sslrootcert`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The PostgreSQL schema holding Tollgate's tables (created if missing).
    #[arg(long, env = "DATABASE_SCHEMA", default_value = "tollgate")]
    pub database_schema: String,
    /// Redis URL: rate-limit counters (and idempotency records when there is no database);
    /// `rediss://` for TLS.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Redis Cluster seed nodes, comma-separated (`redis://host:port` or `rediss://…`): rate
    /// limits and idempotency records spread over the cluster's primaries. Instead of
    /// `REDIS_URL`.
    #[arg(long, env = "REDIS_CLUSTER_URLS", hide_env_values = true)]
    pub redis_cluster_urls: Option<String>,
    /// PEM file of the CAs a `rediss://` server's certificate must be signed by (instead of
    /// the system's).
    #[arg(long, env = "REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// Base URL of the card processor (`http://host:port`), which must speak the
    /// `mock-processor` API (`POST /v1/charges` with `Idempotency-Key`, `GET
    /// /v1/charges/{reference}`); the in-process simulation when unset.
    #[arg(long, env = "PROCESSOR_URL")]
    pub processor_url: Option<String>,
    /// PEM file of the CAs an `https` processor's certificate must be signed by (instead of the
    /// system's).
    #[arg(long, env = "PROCESSOR_CA_FILE")]
    pub processor_ca_file: Option<PathBuf>,
    /// Prefix of every Redis key this server writes.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "tollgate")]
    pub redis_key_prefix: String,
    /// TOML file with the policy table, timeouts and tuning (see docs/operations.md).
    #[arg(long = "config", env = "TOLLGATE_CONFIG")]
    pub config_file: Option<PathBuf>,
    /// Accept the public development key `test-api-key` even on a non-loopback address, when
    /// no key is set.
    #[arg(long, env = "TOLLGATE_DEV", value_parser = BoolishValueParser::new(),
          action = ArgAction::Set, num_args = 0..=1, default_value = "false",
          default_missing_value = "true")]
    pub dev: bool,
    /// Turn on what only tests and demos need: the test payment methods (`test_decline`,
    /// `test_timeout_after_charge`) and `POST /api/v1/simulate-concurrent`.
    #[arg(long, env = "TOLLGATE_TESTING", value_parser = BoolishValueParser::new(),
          action = ArgAction::Set, num_args = 0..=1, default_value = "false",
          default_missing_value = "true")]
    pub testing: bool,
    /// What to do instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the binary can do besides serving.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// Asks the server on `BIND_ADDR` (loopback for an unspecified address) whether it is
    /// ready: exit 0 on `200` from `/ready`, 1 otherwise. For container health checks, where
    /// there is no curl.
    Healthcheck,
    /// Prints the PostgreSQL migration for `DATABASE_SCHEMA` (idempotent; run it in one
    /// transaction), for a migration tool of your own with `database.migrate = false`.
    Migrations,
    /// Validates a configuration file as start-up would, without starting anything: exit 0
    /// when it is valid, 1 with the error naming the setting otherwise.
    CheckConfig {
        /// The file (default: `--config` / `TOLLGATE_CONFIG`).
        #[arg(long = "config", value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Creates, lists, rolls, re-tiers and revokes managed API keys, in the store the server
    /// reads (`DATABASE_URL` and `DATABASE_SCHEMA`, or `KEYS_FILE`); every replica sees a
    /// change within two seconds.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Resets a subject's rate-limit counters in the shared Redis (`limits reset --user …`).
    #[command(subcommand)]
    Limits(LimitsCommand),
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// The API keys, or an error naming the setting; `(keys, development_mode)`.
    pub fn keys(&self) -> Result<(Vec<ApiKey>, bool), String> {
        // A variable set to nothing is still a setting: it must never fall back to the
        // public development key.
        let set = |name: &str| std::env::var_os(name).is_some().then_some("");
        let api_keys = self.api_keys.as_deref().or_else(|| set("API_KEYS"));
        if self.database_url.is_some() && self.keys_file.is_some() {
            return Err(
                "KEYS_FILE and DATABASE_URL are both set: with a database, managed keys are kept \
                 there; unset KEYS_FILE"
                    .to_owned(),
            );
        }
        let listed = match &self.api_keys_file {
            Some(_) if api_keys.is_some() => {
                return Err("API_KEYS_FILE and API_KEYS are both set: use one".to_owned());
            }
            Some(path) => Some(
                keys::read_file(path)
                    .map_err(|e| format!("API_KEYS_FILE {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let resolved = KeySettings {
            api_keys: listed.as_deref().or(api_keys),
            api_key: self.api_key.as_deref().or_else(|| set("API_KEY")),
            bind_addr: self.bind_addr,
            dev: self.dev,
            managed: self.database_url.is_some() || self.keys_file.is_some(),
        }
        .resolve();
        match &self.api_keys_file {
            Some(path) => resolved.map_err(|e| format!("API_KEYS_FILE {}: {e}", path.display())),
            None => resolved,
        }
    }

    /// Checks the TOML file at `file` (or this configuration's own): one line saying what is
    /// in force, or the error naming the setting.
    pub fn check_file(&self, file: Option<&std::path::Path>) -> Result<String, String> {
        let mut config = self.clone();
        if let Some(file) = file {
            config.config_file = Some(file.to_owned());
        }
        let Some(path) = config.config_file.clone() else {
            return Err("no file to check: pass --config FILE or set TOLLGATE_CONFIG".to_owned());
        };
        let file = config.file()?;
        let set = file.policy_set()?;
        let (policies, tiers) = (set.policies().len(), set.tiers().count());
        Ok(format!(
            "TOLLGATE_CONFIG {}: valid ({policies} rate-limit policies, {tiers} tiers)",
            path.display()
        ))
    }

    /// The TOML file's settings, or the defaults when there is no file.
    pub fn file(&self) -> Result<FileConfig, String> {
        let Some(path) = &self.config_file else {
            let mut file = FileConfig::default();
            if self.testing {
                file.testing = TestingTuning {
                    payment_methods: true,
                    simulate_concurrent: true,
                };
            }
            return Ok(file);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("TOLLGATE_CONFIG {}: {e}", path.display()))?;
        let mut file = FileConfig::parse(&text)
            .map_err(|e| format!("TOLLGATE_CONFIG {}: {e}", path.display()))?;
        if self.testing {
            file.testing = TestingTuning {
                payment_methods: true,
                simulate_concurrent: true,
            };
        }
        Ok(file)
    }
}

/// What the TOML file holds. Unknown fields are errors (a typo must not silently keep a
/// default).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// The rate-limit policy table; the default table when absent.
    #[serde(rename = "policy")]
    pub(crate) policies: Option<Vec<PolicyConfig>>,
    pub(crate) rate_limit: RateLimitTuning,
    pub(crate) timeouts: Timeouts,
    pub(crate) idempotency: IdempotencyTuning,
    pub(crate) processor: ProcessorTuning,
    pub(crate) breaker: BreakerTuning,
    pub(crate) testing: TestingTuning,
    pub(crate) limits: LimitsTuning,
    pub(crate) audit: AuditTuning,
    pub(crate) health: HealthTuning,
    pub(crate) database: DatabaseTuning,
    pub(crate) redis: RedisTuning,
    /// Reverse proxies whose `Forwarded` or `X-Forwarded-For` is believed: addresses or CIDR
    /// ranges.
    pub(crate) trusted_proxies: Vec<IpRange>,
    /// The forwarding header those proxies write: `x-forwarded-for` (the default) or
    /// `forwarded` (RFC 7239). Only that one is read.
    pub(crate) forwarded_header: ForwardedHeader,
    /// Tiers: the users who carry each, and the policies it changes or adds.
    pub(crate) tier: BTreeMap<String, TierSection>,
    /// Custom dimensions: the header each is read from.
    pub(crate) dimension: BTreeMap<String, DimensionSection>,
    pub(crate) log: LogTuning,
    pub(crate) telemetry: TelemetryTuning,
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
            (
                "idempotency.cleanup_interval",
                self.idempotency.cleanup_interval,
            ),
            ("processor.timeout", self.processor.timeout),
            ("processor.attempt_timeout", self.processor.attempt_timeout),
            ("breaker.wait_in_open", self.breaker.wait_in_open),
            ("audit.refusal_window", self.audit.refusal_window),
            (
                "limits.anonymous_log_interval",
                self.limits.anonymous_log_interval,
            ),
            ("database.pool_timeout", self.database.pool_timeout),
            ("redis.pool_timeout", self.redis.pool_timeout),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(format!("{name} must be more than zero"));
            }
        }
        for (name, size) in [
            ("database.pool_size", self.database.pool_size),
            ("redis.pool_size", self.redis.pool_size),
            (
                "processor.max_attempts",
                usize::try_from(self.processor.max_attempts).unwrap_or(usize::MAX),
            ),
        ] {
            if size == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        self.validate_invariants()?;
        self.validate_limits()?;
        if let Some(level) = &self.log.level {
            log_filter(level)?;
        }
        tier_of_users(&self.tier)?;
        dimension_headers(&self.dimension)?;
        let policies = self.policy_set()?;
        for tier in policies.tiers().map(Some).chain([None]) {
            for policy in policies.policies_for(tier) {
                if let Some(dimension) = policy.dimension()
                    && !self.dimension.contains_key(dimension)
                {
                    return Err(format!(
                        "policy `{}`: dimension `{dimension}` has no [dimension.{dimension}] \
                         section saying where its value is read",
                        policy.name()
                    ));
                }
            }
        }
        Ok(())
    }

    /// A charge takes at most `processor.timeout`; its key must stay claimed longer (or a
    /// retry takes it over while it still charges), and its record must outlive the claim (or a
    /// retry finds no record and charges again).
    fn validate_invariants(&self) -> Result<(), String> {
        let (charge, lease, ttl) = (
            self.processor.timeout,
            self.idempotency.lease,
            self.idempotency.ttl,
        );
        if lease <= charge {
            return Err(format!(
                "idempotency.lease ({lease:?}) must be longer than processor.timeout ({charge:?}), \
                 the longest a charge can take"
            ));
        }
        if ttl <= lease {
            return Err(format!(
                "idempotency.ttl ({ttl:?}) must be longer than idempotency.lease ({lease:?})"
            ));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), String> {
        let limits = &self.limits;
        let at_least_one = [
            (
                "limits.max_connections",
                limits.max_connections.unwrap_or(1),
            ),
            (
                "limits.max_connections_per_ip",
                limits.max_connections_per_ip,
            ),
            (
                "limits.anonymous_per_minute",
                usize::try_from(limits.anonymous_per_minute).unwrap_or(usize::MAX),
            ),
            (
                "limits.anonymous_ceiling_per_minute",
                usize::try_from(limits.anonymous_ceiling_per_minute).unwrap_or(usize::MAX),
            ),
            ("audit.memory_events", self.audit.memory_events),
            (
                "audit.memory_events_per_user",
                self.audit.memory_events_per_user,
            ),
        ];
        for (name, value) in at_least_one {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        // hyper reads a request head into a buffer of at least 8 KiB.
        if limits.max_header_bytes < 8192 {
            return Err("limits.max_header_bytes must be at least 8192".to_owned());
        }
        Ok(())
    }

    /// The rate-limit policies, validated.
    pub(crate) fn policy_set(&self) -> Result<PolicySet, String> {
        let mut config = match &self.policies {
            Some(policies) => RateLimitConfig {
                policies: policies.clone(),
                tiers: BTreeMap::new(),
            },
            None => default_policies(),
        };
        config.tiers = (self.tier.iter())
            .map(|(name, section)| (name.clone(), section.policies()))
            .collect();
        config.into_policy_set().map_err(|e| e.to_string())
    }
}

/// The log filter `log.level` names.
pub(crate) fn log_filter(level: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    tracing_subscriber::EnvFilter::try_new(level).map_err(|e| format!("log.level {level:?}: {e}"))
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

#[cfg(test)]
mod tests;
