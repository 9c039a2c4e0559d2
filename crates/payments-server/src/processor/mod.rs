//! The payment processor seam: a processor over HTTP (`PROCESSOR_URL`), or a simulated one
//! in-process for tests and demos.
//!
//! Every charge carries a reference (the transaction id) that the processor deduplicates on, as
//! real processors do with their own idempotency keys: a charge resumed after an ambiguous
//! failure asks [`PaymentProcessor::lookup`] first and never charges twice.

mod http;
mod simulated;

use std::fmt;

use async_trait::async_trait;

pub(crate) use http::HttpProcessor;
pub(crate) use simulated::SimulatedProcessor;

/// One charge.
#[derive(Clone, Debug)]
pub(crate) struct Charge<'a> {
    /// Deduplication reference: the transaction id.
    pub(crate) reference: &'a str,
    pub(crate) amount_minor: i64,
    pub(crate) currency: &'a str,
    pub(crate) payment_method: &'a str,
    /// The W3C `traceparent` to send with the call, continuing the client's trace.
    pub(crate) traceparent: Option<&'a str>,
}

/// The processor's final answer about a charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ChargeResult {
    Approved,
    Declined { code: String },
}

pub(crate) use tollgate_backend::BoxError;

/// The processor could not give an answer: the charge may or may not have happened.
#[derive(Debug, thiserror::Error)]
#[error("payment processor error")]
pub(crate) struct ProcessorError {
    #[source]
    source: BoxError,
    /// The request caused it (a test method, a reference reused for another amount), not the
    /// processor failing: it must not count against the processor in the circuit breaker, or
    /// one client could open the breaker for everyone.
    pub(crate) caused_by_request: bool,
}

impl ProcessorError {
    /// The processor failed.
    pub(crate) fn new(error: impl Into<BoxError>) -> Self {
        ProcessorError {
            source: error.into(),
            caused_by_request: false,
        }
    }

    /// The request caused the failure.
    pub(crate) fn caused_by_request(error: impl Into<BoxError>) -> Self {
        ProcessorError {
            source: error.into(),
            caused_by_request: true,
        }
    }
}

/// Something that charges payment methods.
#[async_trait]
pub(crate) trait PaymentProcessor: Send + Sync + fmt::Debug {
    /// Charges once per reference: a repeated reference returns the first answer.
    async fn charge(&self, charge: &Charge<'_>) -> Result<ChargeResult, ProcessorError>;

    /// What became of the charge with `reference`, if the processor has seen it.
    async fn lookup(&self, reference: &str) -> Result<Option<ChargeResult>, ProcessorError>;
}

/// Test payment methods that force an outcome, like a processor's test cards (only with
/// `testing.payment_methods`).
pub(crate) mod test_methods {
    /// Always declined (`card_declined`).
    pub(crate) const DECLINE: &str = "test_decline";
    /// Charged, but the first answer is lost (a timeout after the charge): the retry must find
    /// the charge instead of charging again.
    pub(crate) const TIMEOUT_AFTER_CHARGE: &str = "test_timeout_after_charge";
}
