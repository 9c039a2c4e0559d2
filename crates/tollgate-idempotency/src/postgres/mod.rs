//! The PostgreSQL store: the source of truth, on the database's clock.
//!
//! One row per scope under `UNIQUE(user, operation, key)`; a claim is one call of a PL/pgSQL
//! function that locks (or inserts) the row and decides; complete and release are single
//! statements that match only the current owner's fence. Leases and expiry use the database's
//! `now()`. Fences come from a sequence, so they never repeat. Expired rows read as absent at
//! once and are deleted in batches by [`cleanup`](IdempotencyStore::cleanup) (an `expires_at`
//! index keeps that cheap). [`PostgresStore::complete_in`] completes inside the caller's
//! transaction, so the payment row and the stored response commit together.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tollgate_idempotency::postgres::{deadpool_postgres, tokio_postgres, PostgresStore};
//!
//! let mut config = deadpool_postgres::Config::new();
//! config.url = Some("postgres://postgres@127.0.0.1/postgres".into());
//! let pool = config.create_pool(Some(deadpool_postgres::Runtime::Tokio1), tokio_postgres::NoTls)?;
//! let store = PostgresStore::start(pool, "tollgate").await?; // runs the migration
//! # Ok(())
//! # }
//! ```

mod sql;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::clock::{Clock, Timestamp};
use async_trait::async_trait;
use bytes::Bytes;

pub use deadpool_postgres;
pub use tokio_postgres;
use tokio_postgres::types::Type;
pub use tollgate_backend::postgres::StatementMode;
use tollgate_backend::postgres::{On, Query};

use crate::fingerprint::Fingerprint;
use crate::store::{Claim, ClaimOptions, IdempotencyStore, Lease, Release, StoredResponse};
use crate::{Error, Scope};

#[derive(Debug)]
struct Statements {
    claim_fresh: Query,
    claim: Query,
    complete: Query,
    release_nothing: Query,
    release_ambiguous: Query,
    cleanup: Query,
}

/// The parameters of a release: user, operation, key, fence, now.
const RELEASE_TYPES: [Type; 5] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TIMESTAMPTZ,
];

/// The 9 parameters of [`PostgresStore::completion_statement`], in order.
#[derive(Debug)]
pub struct CompletionParams<'a> {
    user: &'a str,
    operation: &'a str,
    key: &'a str,
    fence: i64,
    status: i32,
    headers: serde_json::Value,
    body: &'a [u8],
    ttl_ms: i64,
    now: Option<SystemTime>,
}

impl CompletionParams<'_> {
    /// How many parameters [`PostgresStore::completion_statement`] takes.
    pub const COUNT: usize = 9;

    /// Their types, in order: for a statement sent unnamed
    /// ([`StatementMode::Unnamed`]), whose parameter types are given, not inferred.
    pub const TYPES: [Type; 9] = [
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::INT4,
        Type::JSONB,
        Type::BYTEA,
        Type::INT8,
        Type::TIMESTAMPTZ,
    ];

    /// To bind, in order.
    pub fn as_params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 9] {
        [
            &self.user,
            &self.operation,
            &self.key,
            &self.fence,
            &self.status,
            &self.headers,
            &self.body,
            &self.ttl_ms,
            &self.now,
        ]
    }
}

/// The 7 parameters of [`PostgresStore::claim_statement`], in order.
#[derive(Debug)]
pub struct ClaimParams<'a> {
    user: &'a str,
    operation: &'a str,
    key: &'a str,
    fingerprint: &'a [u8],
    lease_ms: i64,
    ttl_ms: i64,
    now: Option<SystemTime>,
}

impl ClaimParams<'_> {
    /// How many parameters [`PostgresStore::claim_statement`] takes.
    pub const COUNT: usize = 7;

    /// Their types, in order (see [`CompletionParams::TYPES`]).
    pub const TYPES: [Type; 7] = [
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::BYTEA,
        Type::INT8,
        Type::INT8,
        Type::TIMESTAMPTZ,
    ];

    /// To bind, in order.
    pub fn as_params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 7] {
        [
            &self.user,
            &self.operation,
            &self.key,
            &self.fingerprint,
            &self.lease_ms,
            &self.ttl_ms,
            &self.now,
        ]
    }
}

/// A test clock mapped onto wall time, for statements that take "now" as a parameter.
#[derive(Debug)]
struct InjectedTime {
    clock: Arc<dyn Clock>,
    origin: Timestamp,
    wall_origin: SystemTime,
}

/// Idempotency records in PostgreSQL.
pub struct PostgresStore {
    pool: deadpool_postgres::Pool,
    statements: Statements,
    mode: StatementMode,
    time: Option<InjectedTime>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("claim", &self.statements.claim.text())
            .field("mode", &self.mode)
            .field("injected_time", &self.time.is_some())
            .finish_non_exhaustive()
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn pg_error(error: tokio_postgres::Error) -> Error {
    Error::from_backend(tollgate_backend::postgres::backend_error(error))
}

fn check_schema(schema: &str) -> Result<(), Error> {
    tollgate_backend::check_schema(schema)
        .map(drop)
        .map_err(Error::from_backend)
}

fn pool_error(error: deadpool_postgres::PoolError) -> Error {
    Error::store(error, true)
}

impl PostgresStore {
    /// The DDL of the store's sequence, table, index and claim function in `schema`
    /// (`[a-z_][a-z0-9_]*`, at most 63 bytes), idempotent (`IF NOT EXISTS`, `OR REPLACE`): for
    /// running with your own migrations, then [`open`](Self::open).
    pub fn migration(schema: &str) -> Result<String, Error> {
        check_schema(schema)?;
        Ok(sql::MIGRATE.replace("{schema}", schema))
    }

    /// Runs the [`migration`](Self::migration) and returns the store.
    ///
    /// The migration runs in one transaction under the advisory lock
    /// `pg_advisory_xact_lock(hashtext('tollgate-migrate:<schema>'))`, the lock every Tollgate
    /// migration of a schema takes: processes starting together (a rollout of several
    /// replicas on a new database) run them one after the other instead of racing on
    /// `CREATE … IF NOT EXISTS`.
    pub async fn start(pool: deadpool_postgres::Pool, schema: &str) -> Result<Self, Error> {
        let ddl = Self::migration(schema)?;
        tollgate_backend::postgres::migrate(&pool, schema, &ddl)
            .await
            .map_err(Error::from_backend)?;
        Self::open(pool, schema)
    }

    /// The store on a schema already migrated (see [`migration`](Self::migration)).
    pub fn open(pool: deadpool_postgres::Pool, schema: &str) -> Result<Self, Error> {
        check_schema(schema)?;
        let fill = |sql: &str, types: &[Type]| Query::new(sql.replace("{schema}", schema), types);
        Ok(PostgresStore {
            pool,
            statements: Statements {
                claim_fresh: fill(sql::CLAIM_FRESH, &ClaimParams::TYPES),
                claim: fill(sql::CLAIM, &ClaimParams::TYPES),
                complete: fill(sql::COMPLETE, &CompletionParams::TYPES),
                release_nothing: fill(sql::RELEASE_NOTHING_HAPPENED, &RELEASE_TYPES),
                release_ambiguous: fill(sql::RELEASE_AMBIGUOUS, &RELEASE_TYPES),
                cleanup: fill(sql::CLEANUP, &[Type::INT8, Type::TIMESTAMPTZ]),
            },
            mode: StatementMode::Prepared,
            time: None,
        })
    }

    /// Sends statements as `mode` says: [`StatementMode::Unnamed`] behind a pooler in
    /// transaction mode (PgBouncer's `pool_mode = transaction`), where a statement prepared on
    /// one server connection is gone on the next.
    pub fn statement_mode(mut self, mode: StatementMode) -> Self {
        self.mode = mode;
        self
    }

    /// Decide on `clock` instead of the database's `now()`. For deterministic tests only: in
    /// production, application clocks would disagree with each other.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.time = Some(InjectedTime {
            origin: clock.now(),
            clock,
            wall_origin: SystemTime::now(),
        });
        self
    }

    fn now(&self) -> Option<SystemTime> {
        self.time
            .as_ref()
            .map(|t| t.wall_origin + t.clock.now().saturating_duration_since(t.origin))
    }

    /// Completes inside the caller's transaction: the stored response commits or rolls back with
    /// the caller's own rows (the payment). Fails with [`Error::Fenced`] if `fence` no longer owns
    /// the record.
    pub async fn complete_in(
        &self,
        transaction: &deadpool_postgres::Transaction<'_>,
        scope: &Scope,
        fence: u64,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), Error> {
        self.complete_with(On::Transaction(transaction), scope, fence, response, ttl)
            .await
    }

    /// The completion as a data-modifying statement, `UPDATE … RETURNING 1`, with parameters
    /// `$1`–`$9` bound from [`completion_params`](Self::completion_params): for completing in
    /// the *same statement* as your own writes (a `WITH c AS (…)` clause; make them conditional
    /// on `EXISTS (SELECT 1 FROM c)`). It returns one row if `fence` still owns the record and
    /// none if it was taken over. One round trip, where [`complete_in`](Self::complete_in)
    /// needs a transaction.
    pub fn completion_statement(&self) -> String {
        format!("{} RETURNING 1", self.statements.complete.text())
    }

    /// [`completion_statement`](Self::completion_statement) for `schema`, without a store: for
    /// a migration that composes it (into a function, say).
    pub fn completion_statement_in(schema: &str) -> Result<String, Error> {
        check_schema(schema)?;
        Ok(format!(
            "{} RETURNING 1",
            sql::COMPLETE.replace("{schema}", schema)
        ))
    }

    /// [`claim_statement`](Self::claim_statement) for `schema`, without a store (see
    /// [`completion_statement_in`](Self::completion_statement_in)).
    pub fn claim_statement_in(schema: &str) -> Result<String, Error> {
        check_schema(schema)?;
        Ok(sql::CLAIM_FRESH.replace("{schema}", schema))
    }

    /// The claim of a key never seen, as a data-modifying statement, `INSERT … ON CONFLICT DO
    /// NOTHING RETURNING fence`, with parameters `$1`–`$7` bound from
    /// [`claim_params`](Self::claim_params): for writing the claim in the *same statement* as
    /// your own first write (a `WITH c AS (…)` clause; make your writes conditional on
    /// `EXISTS (SELECT 1 FROM c)`), so the record and your intent commit together. It returns
    /// the new owner's fence, or no row if the key has a record (live or expired): then claim
    /// it the usual way ([`IdempotencyStore::claim`]), which decides between replay, wait,
    /// mismatch and takeover. The lease it grants is
    /// `Lease { fence, resumed: false }`; run the request with
    /// [`Idempotency::run_claimed`](crate::Idempotency::run_claimed).
    pub fn claim_statement(&self) -> String {
        self.statements.claim_fresh.text().to_owned()
    }

    /// The claim of many keys never seen, in one statement: what
    /// [`claim_statement`](Self::claim_statement) does for one key, done for each row of the
    /// relation `from` (a table, or `unnest(…) AS i(…)` of arrays you bind). `values` are the
    /// seven claim values in [`ClaimParams`] order — user, operation, key, fingerprint, lease
    /// ms, ttl ms, now (NULL: the database's) — as SQL expressions over `from`'s columns.
    ///
    /// It returns `user_id, operation, key, fence` for each key it claimed. A key with a record
    /// returns nothing, and so does the second row of a key that `from` holds twice: join your
    /// own writes to the returned keys (`WITH c AS (…)`), so they happen exactly for the claims.
    ///
    /// ```
    /// use tollgate_idempotency::postgres::PostgresStore;
    ///
    /// let values = ["i.u", "i.o", "i.k", "i.f", "i.lease", "i.ttl", "NULL"];
    /// let sql = PostgresStore::claim_many_statement_in(
    ///     "shop",
    ///     "unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::int8[], $6::int8[]) \
    ///      AS i(u, o, k, f, lease, ttl)",
    ///     &values,
    /// )?;
    /// assert!(sql.contains("RETURNING user_id, operation, key, fence"));
    /// # Ok::<(), tollgate_idempotency::Error>(())
    /// ```
    pub fn claim_many_statement_in(
        schema: &str,
        from: &str,
        values: &[&str; ClaimParams::COUNT],
    ) -> Result<String, Error> {
        check_schema(schema)?;
        Ok(sql::over_rows(sql::CLAIM_FRESH_ROWS, schema, from, values))
    }

    /// The completion of many leases, in one statement: what
    /// [`completion_statement`](Self::completion_statement) does for one, done for each row
    /// of `from`. `values` are the nine values in [`CompletionParams`] order — user,
    /// operation, key, fence, status, headers (`jsonb`), body, ttl ms, now — as SQL
    /// expressions over `from`'s columns.
    ///
    /// It returns `user_id, operation, key` for each record it completed; a lease taken over
    /// (its fence no longer the record's) returns nothing. A key must appear at most once in
    /// `from` (which of two rows completes it is up to the database).
    pub fn completion_many_statement_in(
        schema: &str,
        from: &str,
        values: &[&str; CompletionParams::COUNT],
    ) -> Result<String, Error> {
        check_schema(schema)?;
        Ok(sql::over_rows(sql::COMPLETE_ROWS, schema, from, values))
    }

    /// The parameters of [`claim_statement`](Self::claim_statement).
    pub fn claim_params<'a>(
        &self,
        scope: &'a Scope,
        fingerprint: &'a Fingerprint,
        options: ClaimOptions,
    ) -> ClaimParams<'a> {
        ClaimParams {
            user: scope.user(),
            operation: scope.operation(),
            key: scope.key().as_str(),
            fingerprint: fingerprint.as_bytes().as_slice(),
            lease_ms: millis(options.lease),
            ttl_ms: millis(options.ttl),
            now: self.now(),
        }
    }

    /// The parameters of [`completion_statement`](Self::completion_statement).
    pub fn completion_params<'a>(
        &self,
        scope: &'a Scope,
        fence: u64,
        response: &'a StoredResponse,
        ttl: Duration,
    ) -> CompletionParams<'a> {
        CompletionParams {
            user: scope.user(),
            operation: scope.operation(),
            key: scope.key().as_str(),
            fence: i64::try_from(fence).unwrap_or(i64::MAX),
            status: i32::from(response.status),
            headers: headers_json(&response.headers),
            body: response.body.as_ref(),
            ttl_ms: millis(ttl),
            now: self.now(),
        }
    }

    async fn complete_with(
        &self,
        on: On<'_>,
        scope: &Scope,
        fence: u64,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), Error> {
        let params = self.completion_params(scope, fence, response, ttl);
        let rows = (self.statements.complete)
            .execute(self.mode, on, &params.as_params())
            .await
            .map_err(pg_error)?;
        if rows == 1 {
            Ok(())
        } else {
            Err(Error::Fenced)
        }
    }

    async fn owner_update(&self, query: &Query, scope: &Scope, fence: u64) -> Result<(), Error> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let fence = i64::try_from(fence).unwrap_or(i64::MAX);
        let rows = query
            .execute(
                self.mode,
                On::Client(&client),
                &[
                    &scope.user(),
                    &scope.operation(),
                    &scope.key().as_str(),
                    &fence,
                    &self.now(),
                ],
            )
            .await
            .map_err(pg_error)?;
        if rows == 1 {
            Ok(())
        } else {
            Err(Error::Fenced)
        }
    }
}

fn headers_json(headers: &[(String, String)]) -> serde_json::Value {
    serde_json::Value::Array(
        headers
            .iter()
            .map(|(name, value)| serde_json::json!([name, value]))
            .collect(),
    )
}

fn headers_from_json(value: Option<serde_json::Value>) -> Vec<(String, String)> {
    let Some(serde_json::Value::Array(pairs)) = value else {
        return Vec::new();
    };
    pairs
        .into_iter()
        .filter_map(|pair| match pair {
            serde_json::Value::Array(mut two) if two.len() == 2 => {
                let value = two.pop()?;
                let name = two.pop()?;
                Some((name.as_str()?.to_owned(), value.as_str()?.to_owned()))
            }
            _ => None,
        })
        .collect()
}

#[async_trait]
impl IdempotencyStore for PostgresStore {
    async fn claim(
        &self,
        scope: &Scope,
        fingerprint: &Fingerprint,
        options: ClaimOptions,
    ) -> Result<Claim, Error> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let params = self.claim_params(scope, fingerprint, options);
        let params = params.as_params();
        // Each statement is one round trip (cached per connection, or sent unnamed with its
        // execution). A key never seen is claimed by a plain INSERT; only an existing row
        // needs the locking function.
        let on = On::Client(&client);
        let fresh = self.statements.claim_fresh.opt(self.mode, on, &params);
        if let Some(row) = fresh.await.map_err(pg_error)? {
            return Ok(Claim::Acquired(Lease {
                fence: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
                resumed: false,
            }));
        }
        let claimed = self.statements.claim.opt(self.mode, on, &params).await;
        let row = (claimed.map_err(pg_error)?)
            .ok_or_else(|| Error::store("the claim function returned no row", false))?;
        let outcome: String = row.get(0);
        let fence = || u64::try_from(row.get::<_, Option<i64>>(1).unwrap_or(0)).unwrap_or(0);
        Ok(match outcome.as_str() {
            "acquired" => Claim::Acquired(Lease {
                fence: fence(),
                resumed: false,
            }),
            "resumed" => Claim::Acquired(Lease {
                fence: fence(),
                resumed: true,
            }),
            "mismatch" => Claim::Mismatch,
            "in_progress" => Claim::InProgress {
                retry_after: Duration::from_millis(
                    u64::try_from(row.get::<_, Option<i64>>(2).unwrap_or(0)).unwrap_or(0),
                ),
            },
            "completed" => Claim::Completed(StoredResponse {
                status: u16::try_from(row.get::<_, Option<i32>>(3).unwrap_or(500)).unwrap_or(500),
                headers: headers_from_json(row.get(4)),
                body: Bytes::from(row.get::<_, Option<Vec<u8>>>(5).unwrap_or_default()),
            }),
            other => {
                return Err(Error::store(
                    format!("unexpected claim outcome {other:?}"),
                    false,
                ));
            }
        })
    }

    async fn complete(
        &self,
        scope: &Scope,
        fence: u64,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), Error> {
        // One statement, one round trip: the UPDATE is atomic on its own.
        let client = self.pool.get().await.map_err(pool_error)?;
        self.complete_with(On::Client(&client), scope, fence, response, ttl)
            .await
    }

    async fn release(&self, scope: &Scope, fence: u64, how: Release) -> Result<(), Error> {
        let sql = match how {
            Release::NothingHappened => &self.statements.release_nothing,
            Release::Ambiguous => &self.statements.release_ambiguous,
        };
        self.owner_update(sql, scope, fence).await
    }

    async fn cleanup(&self, max: usize) -> Result<usize, Error> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let deleted = (self.statements.cleanup)
            .execute(self.mode, On::Client(&client), &[&limit, &self.now()])
            .await
            .map_err(pg_error)?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    fn backend(&self) -> &'static str {
        "postgresql"
    }
}
