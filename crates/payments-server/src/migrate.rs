//! One migration for every PostgreSQL table the server uses — idempotency records, the audit
//! trail, payments and managed API keys — in one transaction under one
//! advisory lock: processes starting together on a new database (a rollout of several
//! replicas) run it one after the other instead of racing on `CREATE … IF NOT EXISTS`.
//!
//! The lock is the one the Tollgate crates' own `start` functions take for a schema,
//! `hashtext('tollgate-migrate:<schema>')`, so a library started alone never races either.
//!
//! A schema already at this migration is not touched: the migration's digest is recorded in
//! `{schema}.tollgate_migrations`, and a process whose digest is there runs no DDL. (Even
//! `CREATE INDEX IF NOT EXISTS` locks its table first: run at every start, it deadlocked with
//! the payments of the other processes — a restart under load failed to start.) A new digest
//! runs the DDL under the lock, retried if PostgreSQL picks it as a deadlock's victim.

use tokio_postgres::types::Type;
use tollgate_audit::postgres::PostgresAuditLog;
use tollgate_idempotency::postgres::PostgresStore;

use crate::ledger::BoxError;

/// Every table's DDL for `schema`, in dependency order, and the table of applied migrations.
pub(crate) fn statements(schema: &str) -> Result<Vec<String>, BoxError> {
    Ok(vec![
        PostgresStore::migration(schema)?,
        PostgresAuditLog::migration(schema)?,
        crate::ledger::MIGRATE.replace("{schema}", schema),
        crate::keys::MIGRATION.replace("{schema}", schema),
        // The payment path's writes as functions, for statements sent unnamed (behind a pooler
        // in transaction mode): planned once per connection rather than at every call.
        crate::ledger::Writes::new(schema)?
            .as_functions(schema)
            .0
            .join("\n"),
        format!(
            "CREATE TABLE IF NOT EXISTS {schema}.tollgate_migrations (\n    \
             digest text PRIMARY KEY,\n    applied_at timestamptz NOT NULL DEFAULT now()\n);"
        ),
    ])
}

/// The migration's identity: the blake3 digest of its DDL.
fn digest(ddl: &str) -> String {
    blake3::hash(ddl.as_bytes()).to_hex().to_string()
}

/// Records `digest` as applied (inside the migration's transaction).
fn record(schema: &str, digest: &str) -> String {
    format!(
        "INSERT INTO {schema}.tollgate_migrations (digest) VALUES ('{digest}') ON CONFLICT DO NOTHING;"
    )
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
    statements(schema)
        .map(|ddl| {
            let ddl = ddl.join("\n");
            let applied = record(schema, &digest(&ddl));
            format!("{ddl}\n{applied}")
        })
        .map_err(|e| {
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

/// Whether the migration with `digest` was applied to `schema` (no lock taken).
async fn applied(
    client: &impl tokio_postgres::GenericClient,
    schema: &str,
    digest: &str,
) -> Result<bool, tokio_postgres::Error> {
    let table = format!("{schema}.tollgate_migrations");
    let exists: Option<String> = client
        .query_typed_one("SELECT to_regclass($1)::text", &[(&table, Type::TEXT)])
        .await?
        .get(0);
    if exists.is_none() {
        return Ok(false);
    }
    let sql = format!("SELECT 1 FROM {table} WHERE digest = $1");
    let digest = (
        &digest as &(dyn tokio_postgres::types::ToSql + Sync),
        Type::TEXT,
    );
    Ok(client.query_typed_opt(&sql, &[digest]).await?.is_some())
}

/// Brings `schema` to this migration: nothing if it is there, else [`statements`] in one
/// transaction under the schema's migration lock (three tries if chosen as a deadlock's
/// victim by traffic of running processes).
pub(crate) async fn run(pool: &deadpool_postgres::Pool, schema: &str) -> Result<(), BoxError> {
    let ddl = statements(schema)?.join("\n");
    let digest = digest(&ddl);
    let mut client = pool.get().await?;
    if applied(&**client, schema, &digest).await? {
        return Ok(());
    }
    let mut tries = 0;
    loop {
        tries += 1;
        match migrate_once(&mut client, schema, &ddl, &digest).await {
            Err(error) if tries < 3 && is_deadlock(&error) => {
                tracing::warn!(error = %error, "migration chosen as a deadlock's victim; retrying");
            }
            result => return result.map_err(Into::into),
        }
    }
}

async fn migrate_once(
    client: &mut deadpool_postgres::Client,
    schema: &str,
    ddl: &str,
    digest: &str,
) -> Result<(), tokio_postgres::Error> {
    // A failure rolls the transaction back when it is dropped: the pooled connection is not
    // returned inside an aborted transaction.
    let transaction = client.transaction().await?;
    let lock = format!("tollgate-migrate:{schema}");
    transaction
        .execute_typed(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[(&lock, Type::TEXT)],
        )
        .await?;
    // Another process may have migrated while this one waited for the lock.
    if !applied(&*transaction, schema, digest).await? {
        transaction.batch_execute(ddl).await?;
        transaction.batch_execute(&record(schema, digest)).await?;
    }
    transaction.commit().await
}

fn is_deadlock(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED)
}
