//! Managed API keys: created, rolled, re-tiered and revoked with `payments-server keys`, kept
//! as digests only (never a secret) in PostgreSQL when `DATABASE_URL` is set, otherwise in the
//! `KEYS_FILE`, and watched by every replica, which puts a change in force within two seconds.

pub(crate) mod cli;
mod file;
mod postgres;
pub(crate) mod secret;
pub(crate) mod watch;

use serde::{Deserialize, Serialize};

pub(crate) use postgres::MIGRATION;

/// One managed key, as stored. Times are Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    pub(crate) id: String,
    pub(crate) user: String,
    pub(crate) tier: Option<String>,
    pub(crate) label: Option<String>,
    /// The blake3 digest of the secret.
    #[serde(with = "hex_digest")]
    pub(crate) digest: [u8; 32],
    pub(crate) created_at: i64,
    pub(crate) expires_at: Option<i64>,
    pub(crate) revoked_at: Option<i64>,
    /// When a replica last saw it used (written every half minute; PostgreSQL only).
    #[serde(default)]
    pub(crate) last_used_at: Option<i64>,
}

/// One change to the store; a command's changes are applied together or not at all.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    Insert(KeyRecord),
    /// Refused from `at` on (a revoked key stays revoked at its first time).
    Revoke {
        id: String,
        at: i64,
    },
    /// Expires at `at`, or earlier if it already did.
    ExpireBy {
        id: String,
        at: i64,
    },
    SetTier {
        id: String,
        tier: Option<String>,
    },
}

/// Where managed keys are kept.
#[derive(Debug)]
pub(crate) enum KeyStore {
    Postgres(postgres::PostgresKeys),
    File(file::FileKeys),
}

impl KeyStore {
    /// The keys in PostgreSQL, in `schema` (its table made by the server's migration).
    pub(crate) fn postgres(pool: deadpool_postgres::Pool, schema: &str) -> Self {
        KeyStore::Postgres(postgres::PostgresKeys::new(pool, schema))
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

/// The error for a change naming a key the store does not have.
fn no_such_key(id: &str) -> String {
    format!("no key `{id}` (see `payments-server keys list`)")
}

mod hex_digest {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(digest: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&blake3::Hash::from_bytes(*digest).to_hex())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let hash = blake3::Hash::from_hex(text.as_bytes()).map_err(serde::de::Error::custom)?;
        Ok(*hash.as_bytes())
    }
}
