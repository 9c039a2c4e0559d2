//! The audit event: who did what, how it ended, and the ids that tie it to the request, the
//! idempotency key and the payment.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// What happened. A string underneath so that applications can add their own; the constants
/// are the ones Tollgate emits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Action(Cow<'static, str>);

impl Action {
    /// A payment was recorded as pending, before the processor was called: with
    /// [`PAYMENT_ATTEMPT`](Self::PAYMENT_ATTEMPT) it shows every attempt, a crashed one included.
    pub const PAYMENT_STARTED: Action = Action(Cow::Borrowed("payment_started"));
    /// A payment was executed (first time for its idempotency key).
    pub const PAYMENT_ATTEMPT: Action = Action(Cow::Borrowed("payment_attempt"));
    /// A stored result was replayed for a repeated idempotency key.
    pub const PAYMENT_REPLAY: Action = Action(Cow::Borrowed("payment_replay"));
    /// A request found its idempotency key in progress (409).
    pub const IDEMPOTENCY_CONFLICT: Action = Action(Cow::Borrowed("idempotency_conflict"));
    /// A request reused an idempotency key with a different body (422).
    pub const IDEMPOTENCY_MISMATCH: Action = Action(Cow::Borrowed("idempotency_mismatch"));
    /// A request was rate limited (429).
    pub const RATE_LIMITED: Action = Action(Cow::Borrowed("rate_limited"));
    /// A request failed validation (400, 413, 415, 422).
    pub const VALIDATION_FAILED: Action = Action(Cow::Borrowed("validation_failed"));
    /// Authentication failed (401).
    pub const AUTH_FAILED: Action = Action(Cow::Borrowed("auth_failed"));
    /// A payment's status was read.
    pub const PAYMENT_LOOKUP: Action = Action(Cow::Borrowed("payment_lookup"));

    /// A custom action.
    pub fn custom(name: impl Into<String>) -> Self {
        Action(Cow::Owned(name.into()))
    }

    /// The action's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It worked.
    Success,
    /// It was attempted and failed (a declined card, a processor error).
    Failure,
    /// It was refused before any work (auth, validation, rate limit, conflict).
    Denied,
}

impl Outcome {
    /// The outcome's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }

    /// The outcome named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "success" => Some(Outcome::Success),
            "failure" => Some(Outcome::Failure),
            "denied" => Some(Outcome::Denied),
            _ => None,
        }
    }
}

/// One audit record. Build it with [`AuditEvent::new`] and the setters; free-form
/// [`field`](AuditEvent::field)s whose names look like secrets are stored as `"[redacted]"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Time-ordered (UUIDv7), so the newest event has the largest id: the pagination cursor.
    pub id: Uuid,
    /// When it happened (RFC 3339 in JSON).
    #[serde(serialize_with = "write_time", deserialize_with = "read_time")]
    pub timestamp: SystemTime,
    /// The authenticated user, or `"anonymous"`.
    pub user_id: String,
    /// What happened.
    pub action: Action,
    /// How it ended.
    pub outcome: Outcome,
    /// The HTTP status answered.
    pub status_code: Option<u16>,
    /// The request's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// The payment concerned.
    pub transaction_id: Option<String>,
    /// The request's `X-Request-Id`.
    pub request_id: Option<String>,
    /// How long the request took, in microseconds.
    pub latency_us: Option<u64>,
    /// Anything else, as JSON.
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// Field names that must never carry their value into an audit trail.
const SECRET_MARKERS: [&str; 9] = [
    "authorization",
    "api_key",
    "apikey",
    "password",
    "secret",
    "token",
    "card_number",
    "cvv",
    "cvc",
];

impl AuditEvent {
    /// An event happening now, with a fresh time-ordered id.
    pub fn new(user_id: impl Into<String>, action: Action, outcome: Outcome) -> Self {
        AuditEvent {
            id: Uuid::now_v7(),
            timestamp: now_micros(),
            user_id: user_id.into(),
            action,
            outcome,
            status_code: None,
            idempotency_key: None,
            transaction_id: None,
            request_id: None,
            latency_us: None,
            fields: serde_json::Map::new(),
        }
    }

    /// The HTTP status.
    pub fn status(mut self, status: u16) -> Self {
        self.status_code = Some(status);
        self
    }

    /// The idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The payment's id.
    pub fn transaction_id(mut self, id: impl Into<String>) -> Self {
        self.transaction_id = Some(id.into());
        self
    }

    /// The request id.
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// The request's latency.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency_us = Some(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        self
    }

    /// A free-form field; a name that looks like a secret (`authorization`, `api_key`, `token`,
    /// `password`, card data…) keeps the name and loses the value.
    pub fn field(mut self, name: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        let name = name.into();
        let value = if looks_secret(&name) {
            serde_json::Value::from("[redacted]")
        } else {
            value.into()
        };
        self.fields.insert(name, value);
        self
    }
}

/// Whether `name` contains a secret marker, in any case. Byte by byte, without a lower-case
/// copy: this runs for every field of every event.
fn looks_secret(name: &str) -> bool {
    let name = name.as_bytes();
    (0..name.len()).any(|start| {
        let rest = &name[start..];
        SECRET_MARKERS.iter().any(|marker| {
            rest.len() >= marker.len()
                && rest[..marker.len()].eq_ignore_ascii_case(marker.as_bytes())
        })
    })
}

/// Now, to the microsecond: the precision of JSON timestamps here and of PostgreSQL, so an
/// event reads back equal to what was written.
fn now_micros() -> SystemTime {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let micros = u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX);
    SystemTime::UNIX_EPOCH + Duration::from_micros(micros)
}

fn write_time<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_micros(*time))
}

fn read_time<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_json_round_trips() {
        let event = AuditEvent::new("alice", Action::PAYMENT_ATTEMPT, Outcome::Success)
            .status(201)
            .field("Authorization", "Bearer sk_live_123")
            .field("x_api_key", "k")
            .field("amount_minor", 9999);
        assert_eq!(event.fields["Authorization"], "[redacted]");
        assert_eq!(event.fields["x_api_key"], "[redacted]");
        assert_eq!(event.fields["amount_minor"], 9999);
        let json = serde_json::to_string(&event).expect("serialize");
        assert!(!json.contains("sk_live"));
        let back: AuditEvent = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, event);
        let value: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(value["action"], "payment_attempt");
        assert!(
            value["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
    }

    proptest::proptest! {
        /// The byte-wise check says what a lower-case copy and `contains` say.
        #[test]
        fn secret_names_as_lower_case_contains(
            name in "[a-zA-Z_]{0,6}(AUTHORIZATION|Api_Key|apikey|PassWord|secret|toKen|card_NUMBER|cvv|CVC|cv|toke)?[a-zA-Z_]{0,6}"
        ) {
            let lower = name.to_ascii_lowercase();
            let expected = SECRET_MARKERS.iter().any(|m| lower.contains(m));
            proptest::prop_assert_eq!(looks_secret(&name), expected);
        }
    }

    #[test]
    fn ids_are_time_ordered() {
        let a = AuditEvent::new("u", Action::RATE_LIMITED, Outcome::Denied);
        let b = AuditEvent::new("u", Action::RATE_LIMITED, Outcome::Denied);
        assert!(b.id > a.id);
    }
}
