//! A payment as stored and as answered.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use tollgate_audit::{Action, AuditEvent, Outcome};

use super::Metadata;
use super::currency::currency_exponent;
use super::request::{Amount, PaymentRequest};

/// Where a payment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Recorded before the processor was called, or the processor's answer is not known yet.
    Pending,
    /// Charged.
    Succeeded,
    /// Declined by the processor.
    Failed,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "pending" => Some(Status::Pending),
            "succeeded" => Some(Status::Succeeded),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }
}

/// A payment as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Payment {
    pub(crate) transaction_id: String,
    pub(crate) user_id: String,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) status: Status,
    pub(crate) amount_minor: i64,
    pub(crate) currency: String,
    pub(crate) description: Option<String>,
    pub(crate) payment_method: String,
    pub(crate) metadata: Metadata,
    pub(crate) decline_code: Option<String>,
    pub(crate) created_at: SystemTime,
}

impl Payment {
    /// The `payment_started` entry of this pending payment: written with it, before the
    /// processor is called, for the request `request_id` with idempotency key `key`.
    pub(crate) fn started_event(
        &self,
        key: &str,
        request_id: &str,
        latency: Duration,
    ) -> AuditEvent {
        AuditEvent::new(
            self.user_id.as_str(),
            Action::PAYMENT_STARTED,
            Outcome::Success,
        )
        .status(202)
        .idempotency_key(key)
        .request_id(request_id)
        .transaction_id(self.transaction_id.as_str())
        .latency(latency)
    }

    /// A new pending payment for `request`.
    pub(crate) fn pending(
        user_id: &str,
        idempotency_key: Option<&str>,
        request: PaymentRequest,
    ) -> Self {
        Payment {
            transaction_id: format!("txn_{}", uuid::Uuid::now_v7().simple()),
            user_id: user_id.to_owned(),
            idempotency_key: idempotency_key.map(str::to_owned),
            status: Status::Pending,
            amount_minor: request.amount_minor,
            currency: request.currency.to_owned(),
            description: request.description,
            payment_method: request.payment_method,
            metadata: request.metadata.into(),
            decline_code: None,
            created_at: SystemTime::now(),
        }
    }

    /// Takes the processor's answer.
    pub(crate) fn settle(&mut self, result: &crate::processor::ChargeResult) {
        match result {
            crate::processor::ChargeResult::Approved => self.status = Status::Succeeded,
            crate::processor::ChargeResult::Declined { code } => {
                self.status = Status::Failed;
                self.decline_code = Some(code.clone());
            }
        }
    }

    /// The response body: the contract's fields, `amount` as an exact decimal string.
    pub(crate) fn view(&self) -> PaymentView<'_> {
        let exponent = currency_exponent(&self.currency).unwrap_or(2);
        PaymentView {
            transaction_id: &self.transaction_id,
            status: self.status.as_str(),
            amount: Amount {
                minor: self.amount_minor,
                exponent,
            },
            amount_minor: self.amount_minor,
            currency: &self.currency,
            description: self.description.as_deref(),
            payment_method: &self.payment_method,
            metadata: &self.metadata,
            created_at: humantime::format_rfc3339_millis(self.created_at),
            decline_code: self.decline_code.as_deref(),
        }
    }

    /// [`view`](Self::view) as a JSON value (for embedding in a problem).
    pub(crate) fn to_json(&self) -> Value {
        serde_json::to_value(self.view()).unwrap_or_default()
    }
}

/// A payment as answered, serialized directly: no `Value`, and the amount and the creation time
/// are written into the body as text without a `String` of their own.
#[derive(Debug, serde::Serialize)]
pub(crate) struct PaymentView<'a> {
    transaction_id: &'a str,
    status: &'static str,
    #[serde(serialize_with = "as_text")]
    amount: Amount,
    amount_minor: i64,
    currency: &'a str,
    description: Option<&'a str>,
    payment_method: &'a str,
    metadata: &'a Metadata,
    #[serde(serialize_with = "as_text")]
    created_at: humantime::Rfc3339Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    decline_code: Option<&'a str>,
}

/// Serialises a value as the string its `Display` writes, straight into the output.
fn as_text<T: std::fmt::Display, S: serde::Serializer>(
    value: &T,
    out: S,
) -> Result<S::Ok, S::Error> {
    out.collect_str(value)
}
