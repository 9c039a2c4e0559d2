//! One event as statement parameters: their values, types and placeholders.

use tokio_postgres::types::{ToSql, Type};
use tollgate_backend::postgres::sql_type;

use crate::AuditEvent;

/// The batch insert's parameters: one array per column.
pub(super) const BATCH_TYPES: [Type; 11] = [
    Type::UUID_ARRAY,
    Type::TIMESTAMPTZ_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT4_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT8_ARRAY,
    Type::JSONB_ARRAY,
];

/// One event as the 11 statement parameters of [`PostgresAuditLog::insert_select_statement`](super::PostgresAuditLog::insert_select_statement)
/// (and of the log's own inserts), in column order.
#[derive(Debug)]
pub struct EventParams<'e> {
    event: &'e AuditEvent,
    action: &'e str,
    outcome: &'static str,
    status: Option<i32>,
    latency: Option<i64>,
    fields: serde_json::Value,
}

impl<'e> EventParams<'e> {
    /// The parameters of `event`.
    pub fn new(event: &'e AuditEvent) -> Self {
        EventParams {
            event,
            action: event.action.as_str(),
            outcome: event.outcome.as_str(),
            status: event.status_code.map(i32::from),
            latency: event
                .latency_us
                .map(|us| i64::try_from(us).unwrap_or(i64::MAX)),
            fields: serde_json::Value::Object(event.fields.clone()),
        }
    }

    /// How many parameters [`PostgresAuditLog::insert_select_statement`](super::PostgresAuditLog::insert_select_statement) takes.
    pub const COUNT: usize = 11;

    /// Their types, in order: for a statement sent unnamed
    /// ([`StatementMode::Unnamed`](tollgate_backend::postgres::StatementMode::Unnamed)), whose parameter types are given, not inferred.
    pub const TYPES: [Type; 11] = [
        Type::UUID,
        Type::TIMESTAMPTZ,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT4,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::JSONB,
    ];

    /// To bind, in order.
    pub fn as_params(&self) -> [&(dyn ToSql + Sync); 11] {
        [
            &self.event.id,
            &self.event.timestamp,
            &self.event.user_id,
            &self.action,
            &self.outcome,
            &self.status,
            &self.event.idempotency_key,
            &self.event.transaction_id,
            &self.event.request_id,
            &self.latency,
            &self.fields,
        ]
    }
}

/// The `INSERT … SELECT` of one event into `schema`, its parameters from `$first` on, each cast
/// to its column's type.
pub(super) fn insert_select(schema: &str, first: usize) -> String {
    let values: Vec<String> = (EventParams::TYPES.iter().enumerate())
        .map(|(i, ty)| format!("${}::{}", first + i, sql_type(ty)))
        .collect();
    insert_values(schema, &values.join(", "))
}

/// The `INSERT … SELECT` of an event for each row of `from`, its values expressions over it.
pub(super) fn insert_rows(schema: &str, from: &str, values: &[&str]) -> String {
    format!("{} FROM {from}", insert_values(schema, &values.join(", ")))
}

fn insert_values(schema: &str, values: &str) -> String {
    format!(
        "INSERT INTO {schema}.audit_events (id, occurred_at, user_id, action, outcome, \
         status_code, idempotency_key, transaction_id, request_id, latency_us, fields) \
         SELECT {values}"
    )
}
