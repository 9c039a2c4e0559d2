//! PostgreSQL: which failures may pass, the migration every Tollgate schema takes, and
//! [`Query`]: a statement sent prepared or unnamed, as the connection between the process and
//! PostgreSQL allows.

use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

use crate::{Error, check_schema};

/// How statements are sent to PostgreSQL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatementMode {
    /// Prepared once per connection and cached, then one round trip per execution: for direct
    /// connections and a pooler in session mode.
    #[default]
    Prepared,
    /// Parsed with each execution, in the same round trip, as an unnamed statement that ends
    /// with it: for a pooler in transaction mode (PgBouncer's `pool_mode = transaction`), which
    /// gives each transaction whichever server connection is free, where a statement prepared
    /// on another does not exist.
    Unnamed,
}

/// Where a [`Query`] runs: a pooled connection, or a transaction on one.
#[derive(Clone, Copy, Debug)]
pub enum On<'a> {
    /// A pooled connection (autocommit).
    Client(&'a deadpool_postgres::ClientWrapper),
    /// A transaction.
    Transaction(&'a deadpool_postgres::Transaction<'a>),
}

impl<'a> From<&'a deadpool_postgres::ClientWrapper> for On<'a> {
    fn from(client: &'a deadpool_postgres::ClientWrapper) -> Self {
        On::Client(client)
    }
}

impl<'a> From<&'a deadpool_postgres::Transaction<'a>> for On<'a> {
    fn from(transaction: &'a deadpool_postgres::Transaction<'a>) -> Self {
        On::Transaction(transaction)
    }
}

/// A statement with the types of its parameters: all that either [`StatementMode`] needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    text: String,
    types: Vec<Type>,
}

impl Query {
    /// `text` whose parameters `$1…` have `types`.
    pub fn new(text: impl Into<String>, types: &[Type]) -> Self {
        Query {
            text: text.into(),
            types: types.to_vec(),
        }
    }

    /// The statement's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Its rows, for `params`.
    pub async fn rows(
        &self,
        mode: StatementMode,
        on: On<'_>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        match (mode, on) {
            (StatementMode::Prepared, On::Client(client)) => {
                let statement = client.prepare_typed_cached(&self.text, &self.types).await?;
                client.query(&statement, params).await
            }
            (StatementMode::Prepared, On::Transaction(transaction)) => {
                let statement = (transaction.prepare_typed_cached(&self.text, &self.types)).await?;
                transaction.query(&statement, params).await
            }
            (StatementMode::Unnamed, On::Client(client)) => {
                client.query_typed(&self.text, &self.typed(params)).await
            }
            (StatementMode::Unnamed, On::Transaction(transaction)) => {
                transaction
                    .query_typed(&self.text, &self.typed(params))
                    .await
            }
        }
    }

    /// Its one row, or none, for `params` (more than one row is the caller's bug, read as the
    /// first).
    pub async fn opt(
        &self,
        mode: StatementMode,
        on: On<'_>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        Ok(self.rows(mode, on, params).await?.into_iter().next())
    }

    /// The number of rows it changed, for `params`.
    pub async fn execute(
        &self,
        mode: StatementMode,
        on: On<'_>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        match (mode, on) {
            (StatementMode::Prepared, On::Client(client)) => {
                let statement = client.prepare_typed_cached(&self.text, &self.types).await?;
                client.execute(&statement, params).await
            }
            (StatementMode::Prepared, On::Transaction(transaction)) => {
                let statement = (transaction.prepare_typed_cached(&self.text, &self.types)).await?;
                transaction.execute(&statement, params).await
            }
            (StatementMode::Unnamed, On::Client(client)) => {
                client.execute_typed(&self.text, &self.typed(params)).await
            }
            (StatementMode::Unnamed, On::Transaction(transaction)) => {
                transaction
                    .execute_typed(&self.text, &self.typed(params))
                    .await
            }
        }
    }

    /// This statement as a PL/pgSQL function `schema.name`, for [`StatementMode::Unnamed`]:
    /// the function's body is planned once per server connection and its plan kept, where an
    /// unnamed statement is parsed and planned at every execution. The statement must return
    /// rows of one column of type `column`. The function's DDL (`CREATE OR REPLACE`, for a
    /// migration), and the [`Query`] that calls it with the same parameters and yields the same
    /// rows.
    pub fn as_function(&self, schema: &str, name: &str, column: &str) -> (String, Query) {
        let parameters: Vec<String> = self.types.iter().map(sql_type).collect();
        let arguments: Vec<String> = (1..=self.types.len()).map(|n| format!("${n}")).collect();
        let ddl = format!(
            "CREATE OR REPLACE FUNCTION {schema}.{name}({}) RETURNS SETOF {column} \
             LANGUAGE plpgsql AS $tollgate$ BEGIN RETURN QUERY {}; END $tollgate$;",
            parameters.join(", "),
            self.text
        );
        let call = format!("SELECT * FROM {schema}.{name}({})", arguments.join(", "));
        (ddl, Query::new(call, &self.types))
    }

    fn typed<'p>(&self, params: &[&'p (dyn ToSql + Sync)]) -> Vec<(&'p (dyn ToSql + Sync), Type)> {
        params
            .iter()
            .copied()
            .zip(self.types.iter().cloned())
            .collect()
    }
}

/// `ty` as SQL writes it (`text`, `int8[]`): for casts and function signatures.
pub fn sql_type(ty: &Type) -> String {
    match ty.kind() {
        tokio_postgres::types::Kind::Array(element) => format!("{}[]", element.name()),
        _ => ty.name().to_owned(),
    }
}

/// Whether `error` says a prepared statement does not exist on the connection that ran it:
/// what a pooler in transaction mode does to [`StatementMode::Prepared`].
pub fn is_missing_prepared_statement(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&tokio_postgres::error::SqlState::INVALID_SQL_STATEMENT_NAME)
}

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
        .execute_typed(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[(&lock, Type::TEXT)],
        )
        .await
        .map_err(backend_error)?;
    transaction
        .batch_execute(ddl)
        .await
        .map_err(backend_error)?;
    transaction.commit().await.map_err(backend_error)
}
