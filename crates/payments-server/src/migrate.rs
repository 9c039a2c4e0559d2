//! One migration for every PostgreSQL table the server uses — idempotency records, the audit
//! trail, payments and the simulated processor's charges — in one transaction under one
//! advisory lock: processes starting together on a new database (a rollout of several
//! replicas) run it one after the other instead of racing on `CREATE … IF NOT EXISTS`.
//!
//! The lock is the one the Tollgate crates' own `start` functions take for a schema,
//! `hashtext('tollgate-migrate:<schema>')`, so a library started alone never races either.

use tollgate_audit::postgres::PostgresAuditLog;
use tollgate_idempotency::postgres::PostgresStore;

use crate::ledger::BoxError;

/// Every table's DDL for `schema`, in dependency order.
pub(crate) fn statements(schema: &str) -> Result<Vec<String>, BoxError> {
    Ok(vec![
        PostgresStore::migration(schema)?,
        PostgresAuditLog::migration(schema)?,
        crate::ledger::MIGRATE.replace("{schema}", schema),
        crate::processor::MIGRATE.replace("{schema}", schema),
    ])
}

/// The tables [`statements`] creates, which a server that does not migrate checks for.
const TABLES: [&str; 4] = [
    "idempotency_records",
    "audit_events",
    "payments",
    "simulated_charges",
];

/// The whole migration for `schema` as one SQL text, for a migration tool of your own
/// (`payments-server migrations`): idempotent, and to be run in one transaction.
pub fn sql(schema: &str) -> Result<String, String> {
    statements(schema).map(|ddl| ddl.join("\n")).map_err(|e| {
        format!(
            "DATABASE_SCHEMA {schema:?}: {}",
            crate::error_chain(e.as_ref())
        )
    })
}

/// With `database.migrate = false`: the tables must be there already. The error names the
/// first that is missing.
pub(crate) async fn check(pool: &deadpool_postgres::Pool, schema: &str) -> Result<(), BoxError> {
    let client = pool.get().await?;
    for table in TABLES {
        let found: Option<String> = client
            .query_one(
                "SELECT to_regclass($1)::text",
                &[&format!("{schema}.{table}")],
            )
            .await?
            .get(0);
        if found.is_none() {
            return Err(format!(
                "table {schema}.{table} is missing and database.migrate is false: apply \
                 `payments-server migrations` first, or let the server migrate"
            )
            .into());
        }
    }
    Ok(())
}

/// Runs [`statements`] for `schema` in one transaction under the schema's migration lock.
pub(crate) async fn run(pool: &deadpool_postgres::Pool, schema: &str) -> Result<(), BoxError> {
    let ddl = statements(schema)?.join("\n");
    let mut client = pool.get().await?;
    // A failure rolls the transaction back when it is dropped: the pooled connection is not
    // returned inside an aborted transaction.
    let transaction = client.transaction().await?;
    transaction
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&format!("tollgate-migrate:{schema}")],
        )
        .await?;
    transaction.batch_execute(&ddl).await?;
    transaction.commit().await?;
    Ok(())
}
