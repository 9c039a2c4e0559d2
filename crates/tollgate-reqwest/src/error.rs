//! The crate's [`Error`].

use std::time::Duration;

/// Everything this crate can report. A request refused by the middleware reaches the caller as
/// `reqwest_middleware::Error::Middleware`; `downcast_ref::<tollgate_reqwest::Error>()` on it
/// gives this enum back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The host's circuit breaker is open: the request was not sent.
    #[error("circuit open for {host}; retry after {retry_after:?}")]
    CircuitOpen {
        /// The host whose breaker refused the call.
        host: String,
        /// Time until the breaker lets a probe through.
        retry_after: Duration,
    },
    /// The published retry policy could not be fetched.
    #[error("fetching the retry policy from {url}")]
    Fetch {
        /// The address asked.
        url: String,
        /// Why it failed.
        #[source]
        source: reqwest::Error,
    },
    /// The published retry policy could not be read.
    #[error("reading the retry policy from {url}")]
    Decode {
        /// The address asked.
        url: String,
        /// Why it could not be read.
        #[source]
        source: serde_json::Error,
    },
    /// The retry policy (given or published) is invalid; the message names the field.
    #[error("invalid retry policy")]
    Policy(#[source] tollgate_retry::Error),
}
