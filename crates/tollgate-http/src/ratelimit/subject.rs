//! What a request is limited as, and how to tell.

use std::net::IpAddr;

use crate::RequestHead;

/// What a request is limited as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// The authenticated user, if any.
    pub user: Option<String>,
    /// The client address, after trusted-proxy handling.
    pub ip: Option<IpAddr>,
    /// `METHOD /route/template` (the template, not the path: every distinct path would
    /// otherwise be its own counter).
    pub endpoint: Option<String>,
    /// The subject's tier (from its API key's record, say): its policies are the tier's.
    pub tier: Option<String>,
    /// Values of the application's own dimensions, `(dimension, value)`, for
    /// `Scope::Dimension` policies: a merchant id from a header or from the key's record.
    pub dimensions: Vec<(String, String)>,
}

/// Tells what a request is limited as. Any `Fn(&RequestHead<'_>) -> Subject` is one.
pub trait SubjectExtractor: Send + Sync + 'static {
    /// The subject of `request`.
    fn subject(&self, request: &RequestHead<'_>) -> Subject;
}

impl<F> SubjectExtractor for F
where
    F: Fn(&RequestHead<'_>) -> Subject + Send + Sync + 'static,
{
    fn subject(&self, request: &RequestHead<'_>) -> Subject {
        self(request)
    }
}
