//! What the inner service asks of the layer ([`Disposition`]) and what the layer tells the
//! outer code ([`IdempotencyOutcome`], [`StoreFailure`]).

/// What the layer does with the inner service's response; put one in the response's extensions
/// to override the default (2xx/4xx → `Store`, 5xx → `Ambiguous`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// A terminal outcome: store it and replay it for the TTL.
    Store,
    /// Refused before any side effect (a validation error): answer, store nothing, free the key.
    Forget,
    /// The side effect may have started: keep the record so the next request resumes it.
    Ambiguous,
    /// The inner service already completed the record with the lease's fence inside its own
    /// transaction (`PostgresStore::complete_in`): answer, write nothing more.
    Completed,
}

/// What the layer did, in the extensions of every answer it gives to a request it made
/// idempotent. Outer layers (metrics, audit) match on it instead of parsing headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdempotencyOutcome {
    /// The inner service ran for this request (`Idempotent-Replayed: false`); its own headers
    /// and extensions are on the response.
    Executed,
    /// A stored response was replayed (`Idempotent-Replayed: true`).
    Replayed,
    /// A request with the key was still in flight after the wait (409 + `Retry-After`).
    Conflict,
    /// The key was used with a different request (422).
    Mismatch,
    /// This request's lease was taken over before it finished; its result was not stored (409).
    Fenced,
    /// The `Idempotency-Key` header is missing, repeated or malformed (400).
    InvalidKey,
    /// The body could not be read or is not JSON (400).
    InvalidBody,
    /// The body is larger than the limit (413).
    BodyTooLarge,
    /// The idempotency store failed (503 + `Retry-After`); see [`StoreFailure`].
    StoreFailed,
}

/// Put in the extensions of a response answered because the idempotency store failed: the
/// store's error and its sources, for your logs (clients get a fixed message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreFailure(pub String);
