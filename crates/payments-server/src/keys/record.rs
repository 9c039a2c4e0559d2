//! A managed key as stored, and the changes a command makes to the store.

use serde::{Deserialize, Serialize};

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

/// The error for a change naming a key the store does not have.
pub(crate) fn no_such_key(id: &str) -> String {
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
