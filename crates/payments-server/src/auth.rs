//! Bearer authentication without comparing the presented key to each configured one.
//!
//! Keys are held as blake3 digests in a map. A request's key is hashed and looked up: the time
//! taken depends only on the digest, which reveals nothing about any configured key (finding a
//! key from its digest, or from how it compares with others, is what blake3 rules out). The cost
//! is one hash, however many keys.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use axum::response::Response;
use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::{HeaderMap, StatusCode};

use crate::config::ApiKey;
use crate::keys::{KeyRecord, secret};

/// The authenticated user, in the request's extensions once the authentication layer admitted
/// it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Caller {
    pub(crate) user: Arc<str>,
    /// The tier its key carries, if any (a user's tier otherwise comes from the configuration).
    pub(crate) tier: Option<Arc<str>>,
}

/// What a request presented, when it is not a configured key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Presented {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A key no one has.
    Unknown,
    /// More than one `Authorization` header: which one counts is ambiguous.
    Repeated,
}

pub(crate) fn unauthorized() -> Response {
    let mut response = crate::responses::simple(
        StatusCode::UNAUTHORIZED,
        "send `Authorization: Bearer <API key>` with a valid key",
    );
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"tollgate\""),
    );
    response
}

/// One key as authentication knows it: whose it is, and for a managed key its id, tier and
/// expiry.
#[derive(Debug)]
struct KeyEntry {
    caller: Caller,
    /// A managed key's id (`None` for one listed in `API_KEYS`).
    id: Option<Arc<str>>,
    /// Unix seconds from which the key is refused.
    expires_at: Option<i64>,
    /// Whether the key authenticated a request since the last [`KeyDirectory::take_used`].
    used: AtomicBool,
}

/// The keys in force, by digest. The digests are uniform already, so the map hashes them with
/// foldhash rather than SipHash.
#[derive(Debug, Default)]
struct Keys {
    by_digest: HashMap<[u8; 32], KeyEntry, foldhash::fast::RandomState>,
}

/// Every key that authenticates: those listed at start-up (`API_KEYS`, `API_KEY`, kept as
/// digests) and the managed ones, replaced whole whenever the key store changes.
#[derive(Debug)]
pub(crate) struct KeyDirectory {
    listed: Vec<([u8; 32], Arc<str>)>,
    current: ArcSwap<Keys>,
}

impl KeyDirectory {
    /// The keys `listed`, and no managed key yet.
    pub(crate) fn new(listed: &[ApiKey]) -> Self {
        let listed: Vec<_> = (listed.iter())
            .map(|k| (secret::digest(&k.key), Arc::from(k.user.as_str())))
            .collect();
        let directory = KeyDirectory {
            listed,
            current: ArcSwap::default(),
        };
        directory.replace(&[]);
        directory
    }

    /// Puts `records` in force beside the listed keys: a revoked one is left out (an expired one
    /// is refused when presented). The number of managed keys now in force.
    pub(crate) fn replace(&self, records: &[KeyRecord]) -> usize {
        let listed = self.listed.iter().map(|(digest, user)| {
            let caller = Caller {
                user: Arc::clone(user),
                tier: None,
            };
            (*digest, KeyEntry::new(caller, None, None))
        });
        let managed = (records.iter())
            .filter(|record| record.revoked_at.is_none())
            .map(|record| {
                let caller = Caller {
                    user: record.user.as_str().into(),
                    tier: record.tier.as_deref().map(Arc::from),
                };
                let id = Some(record.id.as_str().into());
                (record.digest, KeyEntry::new(caller, id, record.expires_at))
            });
        let keys = Keys {
            by_digest: listed.chain(managed).collect(),
        };
        let count = keys.by_digest.len() - self.listed.len();
        self.current.store(Arc::new(keys));
        count
    }

    /// The caller whose key the request presents as `Authorization: Bearer <key>` (the scheme
    /// in any case, RFC 7235). A managed key's secret that fails its checksum is refused before
    /// any lookup; an expired key is refused like an unknown one.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, Presented> {
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let value = values.next().ok_or(Presented::Missing)?;
        if values.next().is_some() {
            return Err(Presented::Repeated);
        }
        let text = value.to_str().map_err(|_| Presented::Unknown)?.trim();
        let (scheme, key) = text.split_once(' ').ok_or(Presented::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Presented::Missing);
        }
        let key = key.trim();
        if secret::is_mistyped(key) {
            return Err(Presented::Unknown);
        }
        let keys = self.current.load();
        let entry =
            (keys.by_digest.get(&secret::digest(key.as_bytes()))).ok_or(Presented::Unknown)?;
        if entry.expires_at.is_some_and(|at| at <= unix_now()) {
            return Err(Presented::Unknown);
        }
        // Read first: a key in use stays marked without a write to a shared line per request.
        if entry.id.is_some() && !entry.used.load(Ordering::Relaxed) {
            entry.used.store(true, Ordering::Relaxed);
        }
        Ok(entry.caller.clone())
    }

    /// The ids of the managed keys used since the last call (their marks cleared).
    pub(crate) fn take_used(&self) -> Vec<String> {
        let keys = self.current.load();
        (keys.by_digest.values())
            .filter(|entry| entry.used.swap(false, Ordering::Relaxed))
            .filter_map(|entry| entry.id.as_deref().map(str::to_owned))
            .collect()
    }
}

impl KeyEntry {
    fn new(caller: Caller, id: Option<Arc<str>>, expires_at: Option<i64>) -> Self {
        KeyEntry {
            caller,
            id,
            expires_at,
            used: AtomicBool::new(false),
        }
    }
}

/// Now, in Unix seconds.
pub(crate) fn unix_now() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_keys() {
        let keys = KeyDirectory::new(&[
            ApiKey::new("secret-1", "alice"),
            ApiKey::new("secret-2", "bob"),
        ]);
        let with = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append("authorization", HeaderValue::from_static(value));
            }
            keys.authenticate(&headers).map(|caller| caller.user)
        };
        assert_eq!(with(&[]), Err(Presented::Missing));
        assert_eq!(with(&["Bearer secret-1"]).as_deref(), Ok("alice"));
        assert_eq!(with(&["bearer secret-2"]).as_deref(), Ok("bob"), "any case");
        assert_eq!(with(&["BEARER  secret-2 "]).as_deref(), Ok("bob"));
        assert_eq!(with(&["Bearer secret-3"]), Err(Presented::Unknown));
        assert_eq!(with(&["Basic secret-1"]), Err(Presented::Missing));
        assert_eq!(with(&["Bearer"]), Err(Presented::Missing));
        assert_eq!(
            with(&["Bearer secret-1", "Bearer secret-2"]),
            Err(Presented::Repeated)
        );
        assert!(
            !format!("{keys:?}").contains("secret"),
            "no key in Debug output"
        );
    }

    fn record(id: &str, secret: &str, tier: Option<&str>) -> KeyRecord {
        KeyRecord {
            id: id.to_owned(),
            user: "dave".to_owned(),
            tier: tier.map(str::to_owned),
            label: None,
            digest: secret::digest(secret.as_bytes()),
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        }
    }

    #[test]
    fn managed_keys_carry_their_tier_and_are_refused_once_expired_or_revoked() {
        let directory = KeyDirectory::new(&[ApiKey::new("listed-key-00001", "alice")]);
        let [live, expired, revoked] = [(); 3].map(|()| secret::new_secret().expect("random"));
        let mut records = vec![
            record("key_live", &live, Some("gold")),
            record("key_expired", &expired, None),
            record("key_revoked", &revoked, None),
        ];
        records[1].expires_at = Some(unix_now() - 1);
        records[2].revoked_at = Some(0);
        assert_eq!(
            directory.replace(&records),
            2,
            "the revoked key is left out"
        );
        let present = |key: &str| {
            let mut headers = HeaderMap::new();
            let value = HeaderValue::from_str(&format!("Bearer {key}")).expect("a value");
            headers.insert("authorization", value);
            directory.authenticate(&headers)
        };
        let caller = present(&live).expect("in force");
        assert_eq!(
            (&*caller.user, caller.tier.as_deref()),
            ("dave", Some("gold"))
        );
        assert_eq!(present(&expired), Err(Presented::Unknown));
        assert_eq!(present(&revoked), Err(Presented::Unknown));
        assert_eq!(
            present("listed-key-00001").expect("listed").user.as_ref(),
            "alice"
        );
        // Used keys are reported once; listed keys have no id to report.
        assert_eq!(directory.take_used(), ["key_live"]);
        assert!(directory.take_used().is_empty());
        // A replacement keeps the listed keys and drops what the store no longer has.
        directory.replace(&[]);
        assert_eq!(present(&live), Err(Presented::Unknown));
        assert!(present("listed-key-00001").is_ok());
    }
}
