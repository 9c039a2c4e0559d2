//! One migration for every PostgreSQL table the server uses — idempotency records, the audit
//! trail, payments and managed API keys — in one transaction under one
//! advisory lock: processes starting together on a new database (a rollout of several
//! replicas) run it one after the other instead of racing on `CREATE … IF NOT EXISTS`.
//!
//! The lock is the one the Tollgate crates' own `start` functions take for a schema,
//! `hashtext('tollgate-migrate:<schema>')`, so a library started alone never races either.
//!
//! A schema already at this migration is not touched: `tollgate_backend::postgres::migrate`
//! records the migration's digest in `{schema}.tollgate_migrations`, and a process whose digest
//! is there runs no DDL. (Even `CREATE INDEX IF NOT EXISTS` locks its table first: run at every
//! start, it deadlocked with the payments of the other processes — a restart under load failed
//! to start.) A new digest runs the DDL under the lock, retried if PostgreSQL picks it as a
//! deadlock's victim.

use tokio_postgres::types::Type;
use tollgate_audit::postgres::PostgresAuditLog;
use tollgate_idempotency::postgres::PostgresStore;

use tollgate_backend::BoxError;

/// Every table's DDL for `schema`, in dependency order.
pub(crate) fn statements(schema: &str) -> Result<Vec<String>, BoxError> {
    Ok(vec![
        PostgresStore::migration(schema)?,
        PostgresAuditLog::migration(schema)?,
        crate::ledger::MIGRATE.replace("{schema}", schema),
        // A payments table made before its key held the user gets (user_id, transaction_id).
        tollgate_backend::postgres::widen_primary_key(
            schema,
            "payments",
            "user_id, transaction_id",
        ),
        crate::keys::MIGRATION.replace("{schema}", schema),
        // The payment path's writes as functions, for statements sent unnamed (behind a pooler
        // in transaction mode): planned once per connection rather than at every call.
        crate::ledger::Writes::new(schema)?
            .as_functions(schema)?
            .0
            .join("\n"),
    ])
}

/// The tables [`statements`] creates, which a server that does not migrate checks for.
const TABLES: [&str; 4] = [
    "idempotency_records",
    "audit_events",
    "payments",
    "api_keys",
];

/// The whole migration for `schema` as one SQL text, for a migration tool of your own
/// (`payments-server migrations`): idempotent, and to be run in one transaction.
pub fn sql(schema: &str) -> Result<String, String> {
    let ddl = statements(schema).map(|ddl| ddl.join("\n"));
    ddl.and_then(|ddl| Ok(tollgate_backend::postgres::recorded(schema, &ddl)?))
        .map_err(|e| {
            format!(
                "DATABASE_SCHEMA {schema:?}: {}",
                crate::error_chain(e.as_ref())
            )
        })
}

/// Readies `schema` as `database.migrate` says: [`run`] the migration, or only [`check`] that
/// its tables are there (a database user without `CREATE` rights).
pub(crate) async fn prepare(
    pool: &deadpool_postgres::Pool,
    schema: &str,
    migrate: bool,
) -> Result<(), BoxError> {
    if migrate {
        run(pool, schema).await
    } else {
        check(pool, schema).await
    }
}

/// With `database.migrate = false`: the tables must be there already. The error names the
/// first that is missing.
pub(crate) async fn check(pool: &deadpool_postgres::Pool, schema: &str) -> Result<(), BoxError> {
    let client = pool.get().await?;
    for table in TABLES {
        // Sent unnamed (as every statement here): these run before any setting is known to the
        // statements, and work through any pooler.
        let name = format!("{schema}.{table}");
        let found: Option<String> = client
            .query_typed_one("SELECT to_regclass($1)::text", &[(&name, Type::TEXT)])
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

/// Brings `schema` to this migration: nothing if it is there, else [`statements`] in one
/// transaction under the schema's migration lock (three tries if chosen as a deadlock's
/// victim by traffic of running processes).
pub(crate) async fn run(pool: &deadpool_postgres::Pool, schema: &str) -> Result<(), BoxError> {
    let ddl = statements(schema)?.join("\n");
    tollgate_backend::postgres::migrate(pool, schema, &ddl).await?;
    Ok(())
}
