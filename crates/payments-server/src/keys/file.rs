//! The keys file (`KEYS_FILE`): JSON, rewritten whole by the command line (a new file renamed
//! over the old, so a reader sees the old keys or the new ones, never half of either) under a
//! lock file, and polled by each replica through the digest of its text.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::record::{Change, KeyRecord, no_such_key};

/// A lock file older than this was left by a command that died: it is taken over.
const STALE_LOCK: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(crate) struct FileKeys {
    path: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Contents {
    /// Moved on by every change, so that each one changes the text (and so its digest).
    version: u64,
    keys: Vec<KeyRecord>,
}

impl FileKeys {
    pub(crate) fn new(path: PathBuf) -> Self {
        FileKeys { path }
    }

    /// The digest of the file's text. Read whole at every poll: a keys file is small, and a
    /// modification time can stay the same across two quick changes of equal length.
    pub(crate) fn version(&self) -> Result<String, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(blake3::hash(&bytes).to_hex().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok("absent".to_owned()),
            Err(e) => Err(self.error(e)),
        }
    }

    pub(crate) fn records(&self) -> Result<Vec<KeyRecord>, String> {
        Ok(self.read()?.keys)
    }

    pub(crate) fn apply(&self, changes: &[Change]) -> Result<(), String> {
        let _lock = Lock::take(&self.path)?;
        let mut contents = self.read()?;
        for change in changes {
            apply(&mut contents.keys, change)?;
        }
        contents.version += 1;
        let text = serde_json::to_string_pretty(&contents).map_err(|e| e.to_string())?;
        let temporary = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&temporary, text).map_err(|e| self.error(e))?;
        std::fs::rename(&temporary, &self.path).map_err(|e| self.error(e))
    }

    fn read(&self) -> Result<Contents, String> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| self.error(e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Contents::default()),
            Err(e) => Err(self.error(e)),
        }
    }

    fn error(&self, error: impl std::fmt::Display) -> String {
        format!("KEYS_FILE {}: {error}", self.path.display())
    }
}

fn find<'k>(keys: &'k mut [KeyRecord], id: &str) -> Result<&'k mut KeyRecord, String> {
    (keys.iter_mut().find(|k| k.id == id)).ok_or_else(|| no_such_key(id))
}

fn apply(keys: &mut Vec<KeyRecord>, change: &Change) -> Result<(), String> {
    match change {
        Change::Insert(record) => keys.push(record.clone()),
        Change::Revoke { id, at } => {
            let key = find(keys, id)?;
            key.revoked_at = Some(key.revoked_at.unwrap_or(*at));
        }
        Change::ExpireBy { id, at } => {
            let key = find(keys, id)?;
            key.expires_at = Some(key.expires_at.map_or(*at, |old| old.min(*at)));
        }
        Change::SetTier { id, tier } => find(keys, id)?.tier = tier.clone(),
    }
    Ok(())
}

/// `<file>.lock`, created exclusively: one command changes the file at a time.
struct Lock(PathBuf);

impl Lock {
    fn take(file: &Path) -> Result<Lock, String> {
        let path = file.with_extension("lock");
        for _ in 0..100 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => return Ok(Lock(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let age = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .map(|at| SystemTime::now().duration_since(at).unwrap_or_default());
                    if age.is_ok_and(|age| age > STALE_LOCK) {
                        let _ = std::fs::remove_file(&path);
                    } else {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                Err(e) => return Err(format!("KEYS_FILE lock {}: {e}", path.display())),
            }
        }
        Err(format!(
            "KEYS_FILE lock {}: held by another command for 5 s",
            path.display()
        ))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> KeyRecord {
        KeyRecord {
            id: id.to_owned(),
            user: "dave".to_owned(),
            tier: None,
            label: None,
            digest: [7; 32],
            created_at: 1,
            expires_at: Some(500),
            revoked_at: None,
            last_used_at: None,
        }
    }

    #[test]
    fn changes_are_applied_together_and_move_the_version() {
        let dir = std::env::temp_dir().join(format!("tollgate-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory");
        let store = FileKeys::new(dir.join("keys.json"));
        assert_eq!(store.version().expect("absent"), "absent");
        assert!(store.records().expect("none yet").is_empty());
        store
            .apply(&[Change::Insert(record("key_a"))])
            .expect("inserted");
        let first = store.version().expect("a version");
        let changes = [
            Change::ExpireBy {
                id: "key_a".into(),
                at: 900,
            },
            Change::SetTier {
                id: "key_a".into(),
                tier: Some("gold".into()),
            },
            Change::Revoke {
                id: "key_a".into(),
                at: 42,
            },
        ];
        store.apply(&changes).expect("applied");
        assert_ne!(store.version().expect("a version"), first);
        let stored = &store.records().expect("read")[0];
        assert_eq!(stored.expires_at, Some(500), "expiry only moves earlier");
        assert_eq!(
            (stored.tier.as_deref(), stored.revoked_at),
            (Some("gold"), Some(42))
        );
        // A change naming an unknown key changes nothing.
        let unknown = [
            Change::Insert(record("key_b")),
            Change::Revoke {
                id: "nope".into(),
                at: 1,
            },
        ];
        assert!(store.apply(&unknown).expect_err("unknown").contains("nope"));
        assert_eq!(store.records().expect("read").len(), 1);
        assert!(!dir.join("keys.lock").exists(), "the lock is released");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
