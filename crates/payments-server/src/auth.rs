//! Bearer authentication without comparing the presented key to each configured one.
//!
//! Keys are held as blake3 digests in a map. A request's key is hashed and looked up: the time
//! taken depends only on the digest, which reveals nothing about any configured key, and the
//! final comparison of digests is constant-time. The cost is one hash, however many keys.

use std::collections::HashMap;

use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::config::ApiKey;

/// The configured keys, by digest.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    by_digest: HashMap<[u8; 32], (String, [u8; 32])>,
}

impl Keys {
    pub(crate) fn new(keys: &[ApiKey]) -> Self {
        let by_digest = keys
            .iter()
            .map(|k| {
                let digest = *blake3::hash(&k.key).as_bytes();
                (digest, (k.user.clone(), digest))
            })
            .collect();
        Keys { by_digest }
    }

    /// The user whose key the request presents, if any.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Option<&str> {
        let presented = headers
            .get(http::header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?
            .trim()
            .as_bytes();
        let digest = *blake3::hash(presented).as_bytes();
        let (user, stored) = self.by_digest.get(&digest)?;
        bool::from(stored.ct_eq(&digest)).then_some(user.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_keys() {
        let keys = Keys::new(&[
            ApiKey {
                key: b"secret-1".to_vec(),
                user: "alice".to_owned(),
            },
            ApiKey {
                key: b"secret-2".to_vec(),
                user: "bob".to_owned(),
            },
        ]);
        let mut headers = HeaderMap::new();
        assert_eq!(keys.authenticate(&headers), None);
        headers.insert("authorization", "Bearer secret-1".parse().expect("value"));
        assert_eq!(keys.authenticate(&headers), Some("alice"));
        headers.insert("authorization", "Bearer secret-2".parse().expect("value"));
        assert_eq!(keys.authenticate(&headers), Some("bob"));
        headers.insert("authorization", "Bearer secret-3".parse().expect("value"));
        assert_eq!(keys.authenticate(&headers), None);
        headers.insert("authorization", "Basic secret-1".parse().expect("value"));
        assert_eq!(keys.authenticate(&headers), None);
        assert!(
            !format!("{keys:?}").contains("secret"),
            "no key in Debug output"
        );
    }
}
