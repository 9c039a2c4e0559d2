//! The server's own middleware: what tower-http and the Tollgate layers do not do for this
//! contract. Each holds only what it needs (metrics, the audit trail, the key directory), never
//! the application's state, so a middleware can be read, built and tested on its own.

pub(crate) mod accounting;
pub(crate) mod auth;
pub(crate) mod body;
pub(crate) mod claim;
pub(crate) mod deadline;
pub(crate) mod json;
pub(crate) mod observe;
pub(crate) mod rate_limits;
pub(crate) mod request_id;
pub(crate) mod stage;

/// A refusal the server's own middleware answered, in the response's extensions: with
/// `RateLimited` and `IdempotencyOutcome`, what accounting reads instead of status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not JSON (415).
    UnsupportedMediaType,
    /// The handler did not answer within the request's deadline (503).
    DeadlineExceeded,
}
