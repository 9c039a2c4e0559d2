//! The crate's one error type.

use std::sync::Arc;

/// A boxed error from a backend, kept as the source of [`Error::Backend`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong in this crate.
///
/// A request that is *denied* is not an error: it is a [`Decision`](crate::Decision) whose
/// [`retry_after`](crate::Decision::retry_after) says when to come back. Errors are for invalid
/// policies, impossible requests and unreachable backends.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A policy's parameters are invalid; the message names the field.
    #[error("invalid rate-limit policy `{policy}`: {reason}")]
    InvalidPolicy {
        /// The policy's name (may be empty when the name itself is invalid).
        policy: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The configuration could not be read.
    #[error("invalid rate-limit configuration: {0}")]
    InvalidConfig(String),

    /// The request costs more than the policy could ever admit, so waiting would not help.
    #[error("a cost of {cost} exceeds the capacity {capacity} of policy `{policy}`")]
    InsufficientCapacity {
        /// The policy that can never admit this cost.
        policy: Arc<str>,
        /// The requested cost.
        cost: u64,
        /// The most the policy admits at once.
        capacity: u64,
    },

    /// The same storage key appeared twice in one decision (two policies share a name).
    #[error("rate-limit key `{0}` appears twice in one decision")]
    DuplicateKey(String),

    /// The backend could not be reached or answered something unexpected.
    #[error("rate-limit backend error")]
    Backend {
        /// What failed (the backend's own error, with its sources).
        #[source]
        source: BoxError,
        /// Whether retrying the same call later may succeed (connection loss, timeout).
        transient: bool,
    },
}

impl Error {
    /// Whether the same call may succeed later (a backend outage, not a bad policy or cost).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Backend {
                transient: true,
                ..
            }
        )
    }

    /// Whether the error comes from configuration or policy definition (fix the input, not retry).
    pub fn is_config(&self) -> bool {
        matches!(self, Error::InvalidPolicy { .. } | Error::InvalidConfig(_))
    }

    /// A backend failure caused by `source`.
    pub fn backend(source: impl Into<BoxError>, transient: bool) -> Self {
        Error::Backend {
            source: source.into(),
            transient,
        }
    }

    pub(crate) fn invalid_policy(policy: &str, reason: impl Into<String>) -> Self {
        Error::InvalidPolicy {
            policy: policy.to_owned(),
            reason: reason.into(),
        }
    }

    /// This error, if a policy's, as found in tier `tier`.
    pub(crate) fn in_tier(self, tier: &str) -> Self {
        match self {
            Error::InvalidPolicy { policy, reason } => Error::InvalidPolicy {
                policy,
                reason: format!("{reason} (in tier `{tier}`)"),
            },
            other => other,
        }
    }
}
