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

    /// The types of its parameters.
    pub fn types(&self) -> &[Type] {
        &self.types
    }

    /// Its rows, for `params`.
    pub async fn rows(
        &self,
        mode: StatementMode,
        on: On<'_>,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let rows = self.rows_once(mode, on, params).await;
        if let Err(error) = &rows {
            close_if_read_only(on, error).await;
        }
        rows
    }

    async fn rows_once(
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

    /// Prepares it on `client` ahead of its first execution ([`StatementMode::Prepared`];
    /// nothing to do for [`StatementMode::Unnamed`]), so that the execution is sent without
    /// waiting: for statements pipelined in order.
    pub(crate) async fn prepare(
        &self,
        mode: StatementMode,
        client: &deadpool_postgres::ClientWrapper,
    ) -> Result<(), tokio_postgres::Error> {
        if mode == StatementMode::Prepared {
            client.prepare_typed_cached(&self.text, &self.types).await?;
        }
        Ok(())
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
        let changed = self.execute_once(mode, on, params).await;
        if let Err(error) = &changed {
            close_if_read_only(on, error).await;
        }
        changed
    }

    async fn execute_once(
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
        self.function(schema, name, &format!("SETOF {column}"))
    }

    /// [`as_function`](Self::as_function) for a statement that returns rows of several
    /// columns: `columns` as a `RETURNS TABLE` lists them (`out_id text, out_n bigint`). Their
    /// names are PL/pgSQL variables inside the function: pick ones the statement does not use.
    pub fn as_table_function(&self, schema: &str, name: &str, columns: &str) -> (String, Query) {
        self.function(schema, name, &format!("TABLE ({columns})"))
    }

    fn function(&self, schema: &str, name: &str, returns: &str) -> (String, Query) {
        let parameters: Vec<String> = self.types.iter().map(sql_type).collect();
        let arguments: Vec<String> = (1..=self.types.len()).map(|n| format!("${n}")).collect();
        let ddl = format!(
            "CREATE OR REPLACE FUNCTION {schema}.{name}({}) RETURNS {returns} \
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

/// After `error`: if the server refused a write because it is read-only now (a demoted primary,
/// a standby a failover left behind), ends the connection's session, so that the pool drops it
/// at its next checkout and opens another on a server that takes writes
/// (`target_session_attrs=read-write`), instead of failing request after request on it. (In an
/// aborted transaction this cannot run: the connection's next statement outside it will.)
async fn close_if_read_only(on: On<'_>, error: &tokio_postgres::Error) {
    if error.code() != Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION) {
        return;
    }
    let end = "SELECT pg_terminate_backend(pg_backend_pid())";
    let _ = match on {
        On::Client(client) => client.simple_query(end).await,
        On::Transaction(transaction) => transaction.simple_query(end).await,
    };
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

/// Whether the same statement may succeed if sent again: after a closed connection or an I/O
/// failure, and after the errors by which the server says so — a connection exception (class
/// `08`), a server shutting down, crashed or starting (`57P01`–`57P03`), too many connections
/// (`53300`), a server that is read-only now (`25006`, a demoted primary: the connection is
/// ended, and the next one goes to a server that takes writes), and a transaction rolled back
/// for a serialization failure or a deadlock (`40001`, `40P01`). A SQL error of the statement
/// itself (a constraint, a syntax error, a value that does not fit) or an encoding error will
/// not pass.
pub fn is_transient(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    const PASSING: [SqlState; 7] = [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::READ_ONLY_SQL_TRANSACTION,
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
    ];
    let passes = |code: &SqlState| code.code().starts_with("08") || PASSING.contains(code);
    error.is_closed()
        || std::error::Error::source(error).is_some_and(|s| s.is::<std::io::Error>())
        || error.code().is_some_and(passes)
}

/// `error` as a backend failure, transient as [`is_transient`] says.
pub fn backend_error(error: tokio_postgres::Error) -> Error {
    let transient = is_transient(&error);
    Error::backend(error, transient)
}

/// Brings `schema` to the migration `ddl` (idempotent statements), once: its blake3 digest is
/// recorded in `{schema}.tollgate_migrations`, and a schema that has it runs no DDL at all
/// (even `CREATE … IF NOT EXISTS` takes locks that deadlock with live traffic). Otherwise the
/// DDL runs in one transaction under the advisory lock
/// `pg_advisory_xact_lock(hashtext('tollgate-migrate:<schema>'))`, the lock every Tollgate
/// migration of a schema takes, so processes starting together on a new database (a rollout
/// of several replicas) run it one after the other; chosen as a deadlock's victim by live
/// traffic, it is tried again (three times in all). Its statements are sent unnamed, so this
/// works through any connection pooler.
pub async fn migrate(pool: &deadpool_postgres::Pool, schema: &str, ddl: &str) -> Result<(), Error> {
    check_schema(schema)?;
    let digest = blake3::hash(ddl.as_bytes()).to_hex().to_string();
    let mut client = pool.get().await.map_err(|e| Error::backend(e, true))?;
    if applied(&**client, schema, &digest)
        .await
        .map_err(backend_error)?
    {
        return Ok(());
    }
    let mut tries = 0;
    loop {
        tries += 1;
        match migrate_once(&mut client, schema, ddl, &digest).await {
            Err(error) if tries < 3 && is_deadlock(&error) => {}
            result => return result.map_err(backend_error),
        }
    }
}

/// DDL that gives `schema.table`, made with a one-column primary key, the key `key` instead
/// (e.g. `user_id, id`), once: a migration step for tables that gain their user in the key,
/// so they can be distributed by user. Idempotent; run inside the migration's transaction.
pub fn widen_primary_key(schema: &str, table: &str, key: &str) -> String {
    format!(
        "DO $tollgate$ BEGIN\n\
         IF (SELECT indnkeyatts FROM pg_index\n    \
             WHERE indrelid = '{schema}.{table}'::regclass AND indisprimary) = 1 THEN\n    \
             ALTER TABLE {schema}.{table} DROP CONSTRAINT {table}_pkey, ADD PRIMARY KEY ({key});\n\
         END IF;\n\
         END $tollgate$;"
    )
}

/// `ddl` with what records it as applied: the whole text [`migrate`] would run, for a
/// migration tool of your own (one transaction).
pub fn recorded(schema: &str, ddl: &str) -> Result<String, Error> {
    check_schema(schema)?;
    let digest = blake3::hash(ddl.as_bytes()).to_hex().to_string();
    Ok(format!(
        "{ddl}\n{}\n{}",
        record_table(schema),
        record(schema, &digest)
    ))
}

fn record_table(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {schema}.tollgate_migrations (\n    \
         digest text PRIMARY KEY,\n    applied_at timestamptz NOT NULL DEFAULT now()\n);"
    )
}

fn record(schema: &str, digest: &str) -> String {
    format!(
        "INSERT INTO {schema}.tollgate_migrations (digest) VALUES ('{digest}') \
         ON CONFLICT DO NOTHING;"
    )
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
    let digest = (&digest as &(dyn ToSql + Sync), Type::TEXT);
    Ok(client.query_typed_opt(&sql, &[digest]).await?.is_some())
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
        transaction.batch_execute(&record_table(schema)).await?;
        transaction.batch_execute(&record(schema, digest)).await?;
    }
    transaction.commit().await
}

fn is_deadlock(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED)
}
