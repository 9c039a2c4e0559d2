//! PostgreSQL: which failures may pass, and the migration every Tollgate schema takes.

use crate::{Error, check_schema};

/// A closed connection or an I/O failure may pass; a SQL or encoding error will not.
pub fn is_transient(error: &tokio_postgres::Error) -> bool {
    error.is_closed() || std::error::Error::source(error).is_some_and(|s| s.is::<std::io::Error>())
}

/// `error` as a backend failure, transient as [`is_transient`] says.
pub fn backend_error(error: tokio_postgres::Error) -> Error {
    let transient = is_transient(&error);
    Error::backend(error, transient)
}

/// Runs `ddl` (idempotent statements) in one transaction under the advisory lock
/// `pg_advisory_xact_lock(hashtext('tollgate-migrate:<schema>'))`, the lock every Tollgate
/// migration of a schema takes: processes starting together on a new database (a rollout of
/// several replicas) run them one after the other instead of racing on
/// `CREATE … IF NOT EXISTS`.
pub async fn migrate(pool: &deadpool_postgres::Pool, schema: &str, ddl: &str) -> Result<(), Error> {
    check_schema(schema)?;
    let mut client = pool.get().await.map_err(|e| Error::backend(e, true))?;
    // Dropped on failure, the transaction rolls back: the pooled connection is not returned
    // inside an aborted transaction.
    let transaction = client.transaction().await.map_err(backend_error)?;
    let lock = format!("tollgate-migrate:{schema}");
    transaction
        .execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock])
        .await
        .map_err(backend_error)?;
    transaction
        .batch_execute(ddl)
        .await
        .map_err(backend_error)?;
    transaction.commit().await.map_err(backend_error)
}
