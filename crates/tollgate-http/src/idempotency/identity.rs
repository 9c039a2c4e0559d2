//! Who is asking, and which route: what scopes a key.

use crate::RequestHead;

/// Who is asking and which route this is: the user and route template a key is scoped to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The authenticated user.
    pub user: String,
    /// The route template (not the path).
    pub route: String,
}

impl Identity {
    /// `user` on `route`.
    pub fn new(user: impl Into<String>, route: impl Into<String>) -> Self {
        Identity {
            user: user.into(),
            route: route.into(),
        }
    }
}

/// Tells who is asking; `None` passes the request through untouched (for example an
/// unauthenticated one, which auth will refuse). Any `Fn(&RequestHead<'_>) -> Option<Identity>`
/// is one.
pub trait IdentityExtractor: Send + Sync + 'static {
    /// The identity `request` is scoped to, if it is to be made idempotent.
    fn identity(&self, request: &RequestHead<'_>) -> Option<Identity>;
}

impl<F> IdentityExtractor for F
where
    F: Fn(&RequestHead<'_>) -> Option<Identity> + Send + Sync + 'static,
{
    fn identity(&self, request: &RequestHead<'_>) -> Option<Identity> {
        self(request)
    }
}
