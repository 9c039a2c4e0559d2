//! `API_KEYS` and `API_KEY`: which keys authenticate which users, and when the public
//! development key is accepted instead.

use std::net::SocketAddr;

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

/// The longest user id: it is written into log lines, audit entries and rate-limit keys.
const MAX_USER: usize = 64;

/// The shortest key accepted: a short key is a guessable one.
const MIN_KEY: usize = 16;
/// The longest key accepted: it travels in a header.
const MAX_KEY: usize = 256;

/// The key settings as given: `None` when a setting is absent, `Some("")` when it is set empty.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeySettings<'a> {
    pub(crate) api_keys: Option<&'a str>,
    pub(crate) api_key: Option<&'a str>,
    pub(crate) bind_addr: SocketAddr,
    pub(crate) dev: bool,
    /// Whether a key store (PostgreSQL or `KEYS_FILE`) can hold managed keys.
    pub(crate) managed: bool,
}

impl KeySettings<'_> {
    /// The keys, and whether this is development mode (the public key, for user `test`): only
    /// when no key setting exists at all, on a loopback address or with `--dev`. A setting that
    /// exists but names no key is an error, never a fall-back to the public key.
    pub(crate) fn resolve(self) -> Result<(Vec<ApiKey>, bool), String> {
        if self.api_keys.is_none() && self.api_key.is_none() {
            if self.dev || self.bind_addr.ip().is_loopback() {
                return Ok((vec![ApiKey::new(DEV_KEY, "test")], true));
            }
            if self.managed {
                return Ok((Vec::new(), false));
            }
            return Err(format!(
                "API_KEYS: no API_KEYS or API_KEY set, and BIND_ADDR {} is not a loopback address: \
                 the public development key `{DEV_KEY}` is only accepted on loopback or with --dev",
                self.bind_addr
            ));
        }
        let mut keys = match self.api_keys {
            Some(list) => parse_list(list)?,
            None => Vec::new(),
        };
        if let Some(key) = self.api_key {
            let key = key.trim();
            if key.is_empty() {
                return Err("API_KEY is set but empty".to_owned());
            }
            check_key(key).map_err(|e| format!("API_KEY: {e}"))?;
            keys.push(ApiKey::new(key, "default"));
        }
        refuse_duplicates(&keys)?;
        Ok((keys, false))
    }
}

/// An `API_KEYS_FILE`'s entries as one `API_KEYS` list: one entry per line (or several,
/// comma-separated), blank lines and `#` comments skipped.
pub(crate) fn read_file(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let entries: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    Ok(entries.join(","))
}

/// `key:user_id` entries, comma-separated. A key may contain `:`: the user id is after the
/// last one.
fn parse_list(list: &str) -> Result<Vec<ApiKey>, String> {
    if list.trim().is_empty() {
        return Err("API_KEYS is set but names no key".to_owned());
    }
    list.split(',')
        .enumerate()
        .map(|(i, entry)| {
            let n = i + 1;
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(format!("API_KEYS entry {n} is empty"));
            }
            let (key, user) = entry
                .rsplit_once(':')
                .ok_or_else(|| format!("API_KEYS entry {n} is not `key:user_id`"))?;
            if key.is_empty() {
                return Err(format!("API_KEYS entry {n} has an empty key"));
            }
            check_key(key).map_err(|e| format!("API_KEYS entry {n}: {e}"))?;
            check_user(user).map_err(|e| format!("API_KEYS entry {n}: {e}"))?;
            Ok(ApiKey::new(key, user))
        })
        .collect()
}

/// Keys are 16–256 visible ASCII characters: long enough not to be guessed, and sent as they are
/// in an `Authorization` header.
fn check_key(key: &str) -> Result<(), String> {
    let visible = key.bytes().all(|b| b.is_ascii_graphic());
    if !(MIN_KEY..=MAX_KEY).contains(&key.len()) || !visible {
        return Err(format!(
            "a key must be {MIN_KEY}–{MAX_KEY} visible ASCII characters (no spaces); make it long and random"
        ));
    }
    Ok(())
}

/// User ids are 1–64 characters of `[A-Za-z0-9._@+-]`: they reach logs and the audit trail.
pub(crate) fn check_user(user: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._@+-".contains(c);
    if user.is_empty() || user.len() > MAX_USER || !user.chars().all(allowed) {
        return Err(format!(
            "the user id must be 1–{MAX_USER} characters of A-Z a-z 0-9 . _ @ + -"
        ));
    }
    Ok(())
}

/// One key, one user: a key listed twice would silently belong to the last.
fn refuse_duplicates(keys: &[ApiKey]) -> Result<(), String> {
    let mut seen = std::collections::HashMap::with_capacity(keys.len());
    for key in keys {
        if let Some(first) = seen.insert(key.key.as_slice(), key.user.as_str()) {
            return Err(format!(
                "API_KEYS: the same key is given twice, for users {first:?} and {:?}",
                key.user
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings<'a>(api_keys: Option<&'a str>, api_key: Option<&'a str>) -> KeySettings<'a> {
        KeySettings {
            api_keys,
            api_key,
            bind_addr: "127.0.0.1:8000".parse().expect("an address"),
            dev: false,
            managed: false,
        }
    }

    fn users(keys: &[ApiKey]) -> Vec<&str> {
        keys.iter().map(|k| k.user.as_str()).collect()
    }

    #[test]
    fn keys_and_users() {
        let (keys, dev) = settings(
            Some("key-one-0123456789:alice, key-two-0123456789:bob"),
            Some("key-three-0123456789"),
        )
        .resolve()
        .expect("valid");
        assert_eq!(
            (users(&keys), dev),
            (vec!["alice", "bob", "default"], false)
        );
        // A key may contain colons: the user id follows the last one.
        let (keys, _) = settings(Some("sk:live:abc123SECRET0000:alice"), None)
            .resolve()
            .expect("valid");
        assert_eq!(keys[0].key, b"sk:live:abc123SECRET0000");
        assert_eq!(keys[0].user, "alice");
        assert!(
            !format!("{:?}", keys[0]).contains("SECRET"),
            "never in Debug"
        );
    }

    #[test]
    fn mistakes_are_refused_never_the_public_key() {
        const K: &str = "k1-0123456789abcdef";
        let list = |text: &str| text.replace("k1", K);
        let owned = [
            (list("k1:alice,"), "API_KEYS entry 2 is empty"),
            (list("k1:alice,oops"), "API_KEYS entry 2 is not"),
            (list("k1:"), "entry 1: the user id"),
            (list("k1:al ice"), "entry 1: the user id"),
            (list("k1:alice,k1:bob"), "the same key is given twice"),
            ("short:alice".to_owned(), "entry 1: a key must be 16–256"),
            (format!("{}:alice", "k".repeat(257)), "a key must be"),
            ("0123456789\u{e9}abcdef:alice".to_owned(), "visible ASCII"),
        ];
        let mut cases: Vec<(Option<&str>, Option<&str>, &str)> = vec![
            (Some(""), None, "API_KEYS is set but names no key"),
            (Some(" , ,"), None, "API_KEYS entry 1 is empty"),
            (Some(":alice"), None, "entry 1 has an empty key"),
            (None, Some(""), "API_KEY is set but empty"),
            (None, Some("  "), "API_KEY is set but empty"),
            (None, Some("x"), "API_KEY: a key must be"),
        ];
        let one = format!("{K}:alice");
        cases.push((Some(&one), Some(K), "the same key is given twice"));
        for (api_keys, says) in &owned {
            cases.push((Some(api_keys), None, says));
        }
        for (api_keys, api_key, says) in cases {
            let error = settings(api_keys, api_key).resolve().expect_err(says);
            assert!(error.contains(says), "{api_keys:?} {api_key:?}: {error}");
        }
    }

    #[test]
    fn development_mode_only_on_loopback_or_when_asked() {
        let (keys, dev) = settings(None, None).resolve().expect("loopback");
        assert!(dev);
        assert_eq!(keys[0].key, DEV_KEY.as_bytes());
        let public = KeySettings {
            bind_addr: "0.0.0.0:8000".parse().expect("an address"),
            ..settings(None, None)
        };
        let error = public.resolve().expect_err("not on 0.0.0.0");
        assert!(error.contains("--dev"), "{error}");
        let asked = KeySettings {
            dev: true,
            ..public
        };
        assert!(asked.resolve().expect("asked for").1);
        // With a key store, managed keys alone may serve a public address.
        let managed = KeySettings {
            managed: true,
            ..public
        };
        assert_eq!(managed.resolve().expect("managed keys").0.len(), 0);
    }
}
