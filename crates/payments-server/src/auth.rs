//! Bearer authentication without comparing the presented key to each configured one.
//!
//! Keys are held as blake3 digests in a map. A request's key is hashed and looked up: the time
//! taken depends only on the digest, which reveals nothing about any configured key, and the
//! final comparison of digests is constant-time. The cost is one hash, however many keys.

use std::collections::HashMap;
use std::sync::Arc;

use std::future::Future;

use axum::extract::Request;
use axum::response::Response;
use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::{HeaderMap, StatusCode};
use subtle::ConstantTimeEq;

use crate::config::ApiKey;
use crate::layers::stage::{call, Next, Step};
use crate::state::AppState;

/// The authenticated user, in the request's extensions once [`require_key`] admitted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Caller(pub(crate) Arc<str>);

/// Admits requests that present a configured key — from the head, before any body is read —
/// and puts the [`Caller`] in their extensions; `401` otherwise.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequireKey;

impl Step for RequireKey {
    fn run<S: Next>(
        &self,
        state: Arc<AppState>,
        mut request: Request,
        next: S,
    ) -> impl Future<Output = Response> + Send + 'static {
        let user = state.keys.authenticate(request.headers());
        async move {
            match user {
                Some(user) => {
                    tracing::Span::current().record("user", user.as_ref());
                    request.extensions_mut().insert(Caller(user));
                    call(next, request).await
                }
                None => unauthorized(),
            }
        }
    }
}

fn unauthorized() -> Response {
    let mut response = crate::problem::simple(
        StatusCode::UNAUTHORIZED,
        "send `Authorization: Bearer <API key>` with a valid key",
    );
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"tollgate\""),
    );
    response
}

/// The configured keys, by digest.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    by_digest: HashMap<[u8; 32], (Arc<str>, [u8; 32])>,
}

impl Keys {
    pub(crate) fn new(keys: &[ApiKey]) -> Self {
        let by_digest = keys
            .iter()
            .map(|k| {
                let digest = *blake3::hash(&k.key).as_bytes();
                (digest, (Arc::from(k.user.as_str()), digest))
            })
            .collect();
        Keys { by_digest }
    }

    /// The user whose key the request presents, if any.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Option<Arc<str>> {
        let presented = headers
            .get(http::header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?
            .trim()
            .as_bytes();
        let digest = *blake3::hash(presented).as_bytes();
        let (user, stored) = self.by_digest.get(&digest)?;
        bool::from(stored.ct_eq(&digest)).then(|| Arc::clone(user))
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
        assert_eq!(keys.authenticate(&headers).as_deref(), Some("alice"));
        headers.insert("authorization", "Bearer secret-2".parse().expect("value"));
        assert_eq!(keys.authenticate(&headers).as_deref(), Some("bob"));
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
