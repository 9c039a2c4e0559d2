//! The crate's [`Error`].

use std::time::Duration;

use crate::key::KeyError;

/// A boxed error from a backend, kept as the source of [`Error::Store`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong in this crate, with the HTTP status each maps to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `Idempotency-Key` header is missing, repeated or malformed (400).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The body is not JSON (400).
    #[error("the request body is not valid JSON: {0}")]
    InvalidBody(String),
    /// The key was used with a different request (422).
    #[error("the Idempotency-Key was already used with a different request")]
    Mismatch,
    /// A request with the key is still in progress (409 with `Retry-After`).
    #[error("a request with this Idempotency-Key is in progress")]
    Conflict {
        /// When to ask again: another wait's worth (at least a second), never later than the
        /// other request's lease ends.
        retry_after: Duration,
    },
    /// This owner's lease was taken over; its result was not stored (409: the key now belongs to
    /// the newer owner, whose result a retry replays).
    #[error("the idempotency lease was taken over by a newer owner")]
    Fenced,
    /// The store failed (503: retry with the same key — if the handler had already run, the
    /// record is still claimed and the retry resumes it once the lease ends, never twice).
    #[error("idempotency store error")]
    Store {
        /// What failed (a database or Redis error, with its own sources).
        #[source]
        source: BoxError,
        /// Whether retrying may help.
        transient: bool,
    },
}

impl Error {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            Error::Key(_) | Error::InvalidBody(_) => 400,
            Error::Mismatch => 422,
            Error::Conflict { .. } | Error::Fenced => 409,
            Error::Store { .. } => 503,
        }
    }

    /// Whether the same request may succeed later (409, or a store outage).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Conflict { .. }
                | Error::Store {
                    transient: true,
                    ..
                }
        )
    }

    /// When to retry: the other owner's lease for [`Error::Conflict`], a second for a lost
    /// lease or a store outage, nothing for errors a retry cannot fix.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Conflict { retry_after } => Some(*retry_after),
            Error::Fenced | Error::Store { .. } => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

impl Error {
    /// A store failure caused by `source`.
    pub fn store(source: impl Into<BoxError>, transient: bool) -> Self {
        Error::Store {
            source: source.into(),
            transient,
        }
    }

    /// A store error from the shared backend plumbing, keeping the backend's own error as the
    /// source.
    #[cfg(any(feature = "redis", feature = "postgres"))]
    pub(crate) fn from_backend(failed: tollgate_backend::Error) -> Self {
        let transient = failed.is_transient();
        Error::store(failed.into_source(), transient)
    }
}
