//! [`Scope`]: where an idempotency key is unique.

use http::Method;

use crate::key::IdempotencyKey;

/// Where a key is unique: one user, one operation (method and route template), one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    user: String,
    operation: String,
    key: IdempotencyKey,
}

impl Scope {
    /// The scope of `key` for `user` on `method route` (use the route template, not the path).
    pub fn new(user: impl Into<String>, method: &Method, route: &str, key: IdempotencyKey) -> Self {
        Scope {
            user: user.into(),
            operation: format!("{method} {route}"),
            key,
        }
    }

    /// The user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// `METHOD /route`.
    pub fn operation(&self) -> &str {
        &self.operation
    }

    /// The key.
    pub fn key(&self) -> &IdempotencyKey {
        &self.key
    }
}
