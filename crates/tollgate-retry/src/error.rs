//! The crate's [`Error`].

use std::time::Duration;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `Retry-After` value that is neither delta-seconds nor an HTTP-date.
    #[error("invalid Retry-After value {0:?}")]
    InvalidRetryAfter(String),
    /// The retry budget cannot pay for another retry.
    #[error("retry budget exhausted")]
    BudgetExhausted,
    /// The circuit breaker refuses calls for now.
    #[error("circuit open; retry after {retry_after:?}")]
    CircuitOpen {
        /// Time until the breaker lets a probe through (zero while probes are in flight).
        retry_after: Duration,
    },
    /// A configuration value is invalid; the message names the field.
    #[error("invalid retry configuration: {0}")]
    InvalidConfig(String),
}

impl Error {
    /// Whether the circuit breaker refused the call.
    pub fn is_circuit_open(&self) -> bool {
        matches!(self, Error::CircuitOpen { .. })
    }

    /// Whether the retry budget refused a retry.
    pub fn is_budget_exhausted(&self) -> bool {
        matches!(self, Error::BudgetExhausted)
    }

    /// How long to wait before trying again, when the error says.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::CircuitOpen { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}
