//! Managed API keys: created, rolled, re-tiered and revoked with `payments-server keys`, kept
//! as digests only (never a secret) in PostgreSQL when `DATABASE_URL` is set, otherwise in the
//! `KEYS_FILE`, and watched by every replica, which puts a change in force within two seconds.

pub(crate) mod cli;
mod file;
mod postgres;
mod record;
pub(crate) mod secret;
pub(crate) mod watch;

pub(crate) use postgres::MIGRATION;
pub(crate) use record::{Change, KeyRecord, no_such_key};

/// Where managed keys are kept.
#[derive(Debug)]
pub(crate) enum KeyStore {
    Postgres(postgres::PostgresKeys),
    File(file::FileKeys),
}

impl KeyStore {
    /// The keys in PostgreSQL, in `schema` (its table made by the server's migration).
    pub(crate) fn postgres(
        pool: deadpool_postgres::Pool,
        schema: &str,
        mode: tollgate_backend::postgres::StatementMode,
    ) -> Self {
        KeyStore::Postgres(postgres::PostgresKeys::new(pool, schema, mode))
    }

    /// The keys in the file at `path` (none while it does not exist).
    pub(crate) fn file(path: std::path::PathBuf) -> Self {
        KeyStore::File(file::FileKeys::new(path))
    }

    /// What changes whenever the keys do: compared at every poll, cheaper than the keys.
    pub(crate) async fn version(&self) -> Result<String, String> {
        match self {
            KeyStore::Postgres(store) => store.version().await,
            KeyStore::File(store) => store.version(),
        }
    }

    /// Every key, revoked and expired ones included, oldest first.
    pub(crate) async fn records(&self) -> Result<Vec<KeyRecord>, String> {
        match self {
            KeyStore::Postgres(store) => store.records().await,
            KeyStore::File(store) => store.records(),
        }
    }

    /// Applies `changes` together, and moves the version on so that every replica reloads.
    pub(crate) async fn apply(&self, changes: &[Change]) -> Result<(), String> {
        match self {
            KeyStore::Postgres(store) => store.apply(changes).await,
            KeyStore::File(store) => store.apply(changes),
        }
    }

    /// Records that the keys `ids` were used by `at` (PostgreSQL; a keys file is written by
    /// the command line only).
    pub(crate) async fn touch(&self, ids: &[String], at: i64) -> Result<(), String> {
        match self {
            KeyStore::Postgres(store) => store.touch(ids, at).await,
            KeyStore::File(_) => Ok(()),
        }
    }
}
