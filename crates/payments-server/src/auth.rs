//! Bearer authentication with constant-time key comparison.

use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::config::ApiKey;

/// The user whose key the request presents, if any. Every configured key is compared, in
/// constant time, so timing reveals neither a key nor which one matched.
pub(crate) fn authenticate<'k>(headers: &HeaderMap, keys: &'k [ApiKey]) -> Option<&'k str> {
    let presented = headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim()
        .as_bytes();
    let mut found = None;
    for key in keys {
        if bool::from(key.key.as_slice().ct_eq(presented)) {
            found = Some(key.user.as_str());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_keys() {
        let keys = [ApiKey {
            key: b"secret-1".to_vec(),
            user: "alice".to_owned(),
        }];
        let mut headers = HeaderMap::new();
        assert_eq!(authenticate(&headers, &keys), None);
        headers.insert("authorization", "Bearer secret-1".parse().expect("value"));
        assert_eq!(authenticate(&headers, &keys), Some("alice"));
        headers.insert("authorization", "Bearer secret-2".parse().expect("value"));
        assert_eq!(authenticate(&headers, &keys), None);
        headers.insert("authorization", "Basic secret-1".parse().expect("value"));
        assert_eq!(authenticate(&headers, &keys), None);
    }
}
