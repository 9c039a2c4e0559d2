//! Configuration: environment variables, mirrored by command-line flags (flags win).

use std::net::SocketAddr;

use clap::Parser;

/// The server's settings.
#[derive(Clone, Debug, Parser)]
#[command(name = "payments-server", about = "The Tollgate payments server")]
pub(crate) struct Config {
    /// Address to listen on.
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:8000")]
    pub(crate) bind_addr: SocketAddr,
    /// Log filter (`info`, `debug`, `tollgate=debug,info`, …).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub(crate) log_level: String,
    /// Comma-separated `key:user_id` pairs.
    #[arg(long, env = "API_KEYS", hide_env_values = true)]
    pub(crate) api_keys: Option<String>,
    /// One API key, for user `default`.
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,
    /// PostgreSQL URL (not used yet: issue #5).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,
    /// Redis URL (not used yet: issue #5).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub(crate) redis_url: Option<String>,
}

/// An API key and the user it authenticates.
#[derive(Clone)]
pub(crate) struct ApiKey {
    pub(crate) key: Vec<u8>,
    pub(crate) user: String,
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
pub(crate) const DEV_KEY: &str = "test-api-key";

impl Config {
    /// The API keys, or an error naming the setting; `(keys, development_mode)`.
    pub(crate) fn keys(&self) -> Result<(Vec<ApiKey>, bool), String> {
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
}
