//! Bearer authentication without comparing the presented key to each configured one.
//!
//! Keys are held as blake3 digests in a map. A request's key is hashed and looked up: the time
//! taken depends only on the digest, which reveals nothing about any configured key (finding a
//! key from its digest, or from how it compares with others, is what blake3 rules out). The cost
//! is one hash, however many keys.

use std::collections::HashMap;
use std::sync::Arc;

use axum::response::Response;
use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::{HeaderMap, StatusCode};

use crate::config::ApiKey;

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

/// The configured keys, by digest. The digests are uniform already, so the map hashes them with
/// foldhash rather than SipHash.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    by_digest: HashMap<[u8; 32], Arc<str>, foldhash::fast::RandomState>,
}

impl Keys {
    pub(crate) fn new(keys: &[ApiKey]) -> Self {
        let by_digest = keys
            .iter()
            .map(|k| {
                let digest = *blake3::hash(&k.key).as_bytes();
                (digest, Arc::from(k.user.as_str()))
            })
            .collect();
        Keys { by_digest }
    }

    /// The user whose key the request presents as `Authorization: Bearer <key>` (the scheme
    /// in any case, RFC 7235).
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<str>, Presented> {
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
        let digest = *blake3::hash(key.trim().as_bytes()).as_bytes();
        let user = self.by_digest.get(&digest).ok_or(Presented::Unknown)?;
        Ok(Arc::clone(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_keys() {
        let keys = Keys::new(&[
            ApiKey::new("secret-1", "alice"),
            ApiKey::new("secret-2", "bob"),
        ]);
        let with = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append("authorization", HeaderValue::from_static(value));
            }
            keys.authenticate(&headers)
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
}
