//! Each replica's view of the key store: loaded at start, then the store's version polled
//! every second and the keys reloaded when it moves, so a created, re-tiered or revoked key is
//! in force on every replica within two seconds. Polling (not LISTEN) works through any
//! connection pooler. When keys were last used is written back every half minute.

use std::sync::Arc;
use std::time::Duration;

use super::KeyStore;
use crate::auth::unix_now;
use crate::config::Config;
use crate::state::AppState;

const POLL: Duration = Duration::from_secs(1);
const TOUCH_EVERY: u32 = 30;

/// The store `config` names: PostgreSQL (`DATABASE_URL`, migrated as the server does), the
/// `KEYS_FILE`, or none.
pub(crate) async fn open(config: &Config) -> Result<Option<KeyStore>, String> {
    let file = config.file()?;
    if let Some(pool) = crate::pools::postgres(config, &file.database).map_err(|e| e.to_string())? {
        let schema = &config.database_schema;
        let migrated = crate::migrate::prepare(&pool, schema, file.database.migrate).await;
        migrated.map_err(|e| format!("DATABASE_URL: {}", crate::error_chain(e.as_ref())))?;
        let mode = file.database.statement_mode();
        return Ok(Some(KeyStore::postgres(pool, schema, mode)));
    }
    Ok(config.keys_file.clone().map(KeyStore::file))
}

/// Puts the store's keys in force in `state`: the version they were read at.
pub(crate) async fn load(state: &AppState, store: &KeyStore) -> Result<String, String> {
    // The version first: a change between the two reads is seen again at the next poll.
    let version = store.version().await?;
    let records = store.records().await?;
    let count = state.keys.replace(&records);
    tracing::info!(keys = count, version, "managed API keys in force");
    Ok(version)
}

/// Follows `store` for as long as the process runs, from `version` on.
pub(crate) async fn watch(state: Arc<AppState>, store: Arc<KeyStore>, mut version: String) {
    let mut every = tokio::time::interval(POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    for tick in 1_u32.. {
        every.tick().await;
        let polled = match store.version().await {
            Ok(now) if now == version => Ok(()),
            Ok(_) => load(&state, &store).await.map(|now| version = now),
            Err(error) => Err(error),
        };
        match polled {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("the key store answers again");
            }
            Ok(()) => {}
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "the key store cannot be read: the keys in force stay");
            }
            Err(_) => {}
        }
        if tick % TOUCH_EVERY == 0 {
            let used = state.keys.take_used();
            if !used.is_empty()
                && let Err(error) = store.touch(&used, unix_now()).await
            {
                tracing::debug!(%error, "when keys were last used is not recorded");
            }
        }
    }
}
