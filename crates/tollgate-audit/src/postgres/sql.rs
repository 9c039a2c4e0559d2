//! The SQL the PostgreSQL sink runs. `{schema}` is replaced by the validated schema name.

/// Creates the schema and the table, whose primary key serves [`PAGE`]. Idempotent.
pub(crate) const MIGRATE: &str = "
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.audit_events (
    id              uuid NOT NULL,
    occurred_at     timestamptz NOT NULL,
    user_id         text NOT NULL,
    action          text NOT NULL,
    outcome         text NOT NULL,
    status_code     integer,
    idempotency_key text,
    transaction_id  text,
    request_id      text,
    latency_us      bigint,
    fields          jsonb NOT NULL DEFAULT '{}',
    -- The user first: the table can be distributed by user (Citus), and a user's page is a
    -- range of this index.
    PRIMARY KEY (user_id, id)
);
DROP INDEX IF EXISTS {schema}.audit_events_user_newest;
";

/// Inserts a batch as parallel arrays ($1 ids … $11 fields), one statement per batch.
/// `ON CONFLICT DO NOTHING` makes re-sending a batch whose commit acknowledgement was lost safe.
pub(crate) const INSERT_BATCH: &str = "
INSERT INTO {schema}.audit_events
    (id, occurred_at, user_id, action, outcome, status_code, idempotency_key, transaction_id,
     request_id, latency_us, fields)
SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[],
                     $6::int4[], $7::text[], $8::text[], $9::text[], $10::int8[], $11::jsonb[])
ON CONFLICT (user_id, id) DO NOTHING
";

/// Inserts one event ($1 … $11 as in [`INSERT_BATCH`]), inside the caller's transaction.
pub(crate) const INSERT_ONE: &str = "
INSERT INTO {schema}.audit_events
    (id, occurred_at, user_id, action, outcome, status_code, idempotency_key, transaction_id,
     request_id, latency_us, fields)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
";

/// One page: $1 user, $2 cursor (ids below it; NULL for the newest), $3 rows.
pub(crate) const PAGE: &str = "
SELECT id, occurred_at, user_id, action, outcome, status_code, idempotency_key, transaction_id,
       request_id, latency_us, fields
FROM {schema}.audit_events
WHERE user_id = $1 AND ($2::uuid IS NULL OR id < $2)
ORDER BY id DESC
LIMIT $3
";

#[cfg(test)]
mod tests {
    use super::*;

    /// Ready to distribute by user: the key starts with the user, every insert writes it, and
    /// the one read names it.
    #[test]
    fn every_statement_names_the_user() {
        assert!(MIGRATE.contains("PRIMARY KEY (user_id, id)"));
        for insert in [INSERT_BATCH, INSERT_ONE] {
            assert!(insert.contains("(id, occurred_at, user_id,"), "{insert}");
        }
        assert!(INSERT_BATCH.contains("ON CONFLICT (user_id, id)"));
        assert!(PAGE.contains("WHERE user_id = $1"));
    }
}
