//! Managed keys in PostgreSQL: `{schema}.api_keys` (digests, never secrets) and a one-row
//! version that every change moves on in the same transaction, which each replica polls.

use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};
use tollgate_backend::postgres::{On, Query, StatementMode};

use super::record::{Change, KeyRecord, no_such_key};
use crate::error_chain;

/// The tables, made by the server's migration.
pub(crate) const MIGRATION: &str = "\
CREATE TABLE IF NOT EXISTS {schema}.api_keys (
    id text PRIMARY KEY,
    user_id text NOT NULL,
    tier text,
    label text,
    digest bytea NOT NULL UNIQUE CHECK (octet_length(digest) = 32),
    created_at timestamptz NOT NULL,
    expires_at timestamptz,
    revoked_at timestamptz,
    last_used_at timestamptz
);
CREATE TABLE IF NOT EXISTS {schema}.api_keys_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version bigint NOT NULL
);
INSERT INTO {schema}.api_keys_version (singleton, version) VALUES (true, 0)
    ON CONFLICT DO NOTHING;";

/// A statement's parameters, owned: the command line's changes are few and small.
type Params = Vec<Box<dyn ToSql + Sync + Send>>;

#[derive(Debug)]
pub(crate) struct PostgresKeys {
    pool: deadpool_postgres::Pool,
    schema: String,
    mode: StatementMode,
}

/// A time column as Unix seconds.
fn epoch(column: &str) -> String {
    format!("extract(epoch FROM {column})::bigint")
}

fn failed(error: impl std::error::Error) -> String {
    format!("the API key table: {}", error_chain(&error))
}

impl PostgresKeys {
    pub(crate) fn new(pool: deadpool_postgres::Pool, schema: &str, mode: StatementMode) -> Self {
        PostgresKeys {
            pool,
            schema: schema.to_owned(),
            mode,
        }
    }

    pub(crate) async fn version(&self) -> Result<String, String> {
        let client = self.pool.get().await.map_err(failed)?;
        let sql = format!("SELECT version FROM {}.api_keys_version", self.schema);
        let row = Query::new(sql, &[])
            .opt(self.mode, On::Client(&client), &[])
            .await;
        let row = row
            .map_err(failed)?
            .ok_or("the API key version row is missing")?;
        Ok(row.get::<_, i64>(0).to_string())
    }

    pub(crate) async fn records(&self) -> Result<Vec<KeyRecord>, String> {
        let client = self.pool.get().await.map_err(failed)?;
        let sql = format!(
            "SELECT id, user_id, tier, label, digest, {}, {}, {}, {} FROM {}.api_keys \
             ORDER BY created_at, id",
            epoch("created_at"),
            epoch("expires_at"),
            epoch("revoked_at"),
            epoch("last_used_at"),
            self.schema
        );
        let rows = Query::new(sql, &[])
            .rows(self.mode, On::Client(&client), &[])
            .await;
        rows.map_err(failed)?.iter().map(record).collect()
    }

    pub(crate) async fn apply(&self, changes: &[Change]) -> Result<(), String> {
        let mut client = self.pool.get().await.map_err(failed)?;
        let transaction = client.transaction().await.map_err(failed)?;
        for change in changes {
            let (query, params, id) = self.statement(change);
            let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as _).collect();
            let on = On::Transaction(&transaction);
            let rows = query
                .execute(self.mode, on, &params)
                .await
                .map_err(failed)?;
            if let (0, Some(id)) = (rows, id) {
                return Err(no_such_key(id));
            }
        }
        let bump = format!(
            "UPDATE {}.api_keys_version SET version = version + 1",
            self.schema
        );
        let on = On::Transaction(&transaction);
        let bumped = Query::new(bump, &[]).execute(self.mode, on, &[]).await;
        bumped.map_err(failed)?;
        transaction.commit().await.map_err(failed)
    }

    /// The statement of `change`, and the id it must find (none for an insert).
    fn statement<'c>(&self, change: &'c Change) -> (Query, Params, Option<&'c str>) {
        let (text, types, params, id) = self.parts(change);
        (Query::new(text, types), params, id)
    }

    /// The text, parameter types and parameters of `change`'s statement, and the id it must
    /// find.
    fn parts<'c>(&self, change: &'c Change) -> (String, &'static [Type], Params, Option<&'c str>) {
        const TEXT_TIME: &[Type] = &[Type::TEXT, Type::INT8];
        let schema = &self.schema;
        match change {
            Change::Insert(r) => (
                format!(
                    "INSERT INTO {schema}.api_keys \
                     (id, user_id, tier, label, digest, created_at, expires_at) VALUES \
                     ($1, $2, $3, $4, $5, to_timestamp($6::bigint), to_timestamp($7::bigint))"
                ),
                &[
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::BYTEA,
                    Type::INT8,
                    Type::INT8,
                ],
                vec![
                    Box::new(r.id.clone()),
                    Box::new(r.user.clone()),
                    Box::new(r.tier.clone()),
                    Box::new(r.label.clone()),
                    Box::new(r.digest.to_vec()),
                    Box::new(r.created_at),
                    Box::new(r.expires_at),
                ],
                None,
            ),
            Change::Revoke { id, at } => (
                format!(
                    "UPDATE {schema}.api_keys SET revoked_at = \
                     coalesce(revoked_at, to_timestamp($2::bigint)) WHERE id = $1"
                ),
                TEXT_TIME,
                vec![Box::new(id.clone()), Box::new(*at)],
                Some(id),
            ),
            Change::ExpireBy { id, at } => (
                format!(
                    "UPDATE {schema}.api_keys SET expires_at = \
                     least(coalesce(expires_at, to_timestamp($2::bigint)), to_timestamp($2::bigint)) \
                     WHERE id = $1"
                ),
                TEXT_TIME,
                vec![Box::new(id.clone()), Box::new(*at)],
                Some(id),
            ),
            Change::SetTier { id, tier } => (
                format!("UPDATE {schema}.api_keys SET tier = $2 WHERE id = $1"),
                &[Type::TEXT, Type::TEXT],
                vec![Box::new(id.clone()), Box::new(tier.clone())],
                Some(id),
            ),
        }
    }

    pub(crate) async fn touch(&self, ids: &[String], at: i64) -> Result<(), String> {
        let client = self.pool.get().await.map_err(failed)?;
        let sql = format!(
            "UPDATE {}.api_keys SET last_used_at = to_timestamp($2::bigint) WHERE id = ANY($1)",
            self.schema
        );
        let query = Query::new(sql, &[Type::TEXT_ARRAY, Type::INT8]);
        let touched = query
            .execute(self.mode, On::Client(&client), &[&ids, &at])
            .await;
        touched.map_err(failed)?;
        Ok(())
    }
}

fn record(row: &Row) -> Result<KeyRecord, String> {
    let digest: &[u8] = row.get(4);
    Ok(KeyRecord {
        id: row.get(0),
        user: row.get(1),
        tier: row.get(2),
        label: row.get(3),
        digest: digest
            .try_into()
            .map_err(|_| "the API key table: a digest is not 32 bytes".to_owned())?,
        created_at: row.get(5),
        expires_at: row.get(6),
        revoked_at: row.get(7),
        last_used_at: row.get(8),
    })
}
