//! SIGHUP: `TOLLGATE_CONFIG` read again and what of it can change live put in force at once
//! (see [`AppState::reload`]); what cannot is named in the log as waiting for a restart.

use std::collections::BTreeSet;

use crate::config::Config;
use crate::state::AppState;

/// Top-level settings a reload puts in force, whole.
const LIVE_SECTIONS: [&str; 6] = [
    "policy",
    "tier",
    "dimension",
    "trusted_proxies",
    "forwarded_header",
    "log",
];

/// Settings inside other sections that a reload puts in force.
const LIVE_SETTINGS: [&str; 4] = [
    "limits.anonymous_per_minute",
    "limits.anonymous_ceiling_per_minute",
    "audit.refusal_window",
    "health.cache",
];

/// Reloads `TOLLGATE_CONFIG` at every SIGHUP, for as long as the process runs. A file that does
/// not parse or validate changes nothing: the error is logged naming the setting, and what is
/// in force stays.
pub async fn reload_on_hangup(state: std::sync::Arc<AppState>, config: Config) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("SIGHUP cannot be watched: the configuration reloads only at a restart");
            return;
        };
        // What the process started with: the settings that need a restart are compared to it.
        let started_with = table(&config);
        while hangups.recv().await.is_some() {
            reload(&state, &config, &started_with);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (state, config);
    }
}

/// The file's text as a TOML table (empty without a file, or when it does not parse).
fn table(config: &Config) -> toml::Table {
    let text = config
        .config_file
        .as_ref()
        .and_then(|path| std::fs::read_to_string(path).ok());
    text.and_then(|text| text.parse().ok()).unwrap_or_default()
}

/// One reload, logged and counted.
fn reload(state: &AppState, config: &Config, started_with: &toml::Table) {
    if config.config_file.is_none() {
        tracing::warn!("SIGHUP: no TOLLGATE_CONFIG, so there is nothing to reload");
        return;
    }
    let reloads = &state.metrics.config_reloads;
    let reloaded = config.file().and_then(|file| {
        let count = state.reload(&file)?;
        if file.log.level.is_none() {
            // Back to LOG_LEVEL, valid since start-up.
            if let Ok(filter) = crate::config::log_filter(&config.log_level) {
                crate::logging::set_log_filter(filter);
            }
        }
        Ok(count)
    });
    match reloaded {
        Ok(count) => {
            reloads.with_label_values(&["success"]).inc();
            state.metrics.config_loaded();
            let waiting = needs_restart(started_with, &table(config));
            if waiting.is_empty() {
                tracing::info!(policies = count, "SIGHUP: TOLLGATE_CONFIG is in force");
            } else {
                tracing::warn!(
                    policies = count,
                    needs_restart = waiting.join(", "),
                    "SIGHUP: TOLLGATE_CONFIG is in force, except settings that take effect at the next start"
                );
            }
        }
        Err(error) => {
            reloads.with_label_values(&["failure"]).inc();
            tracing::error!(
                %error,
                "SIGHUP: TOLLGATE_CONFIG not reloaded, the configuration in force stays"
            );
        }
    }
}

/// `value` as a section: an absent one is empty, one that is not a table is `None`.
fn as_table<'t>(value: Option<&'t toml::Value>, empty: &'t toml::Table) -> Option<&'t toml::Table> {
    match value {
        Some(toml::Value::Table(table)) => Some(table),
        Some(_) => None,
        None => Some(empty),
    }
}

/// The settings that differ between `old` and `new` and that only a restart puts in force, as
/// `section.setting` (or `section` for a whole one).
fn needs_restart(old: &toml::Table, new: &toml::Table) -> Vec<String> {
    let empty = toml::Table::new();
    let sections: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let mut waiting = Vec::new();
    for section in sections
        .into_iter()
        .filter(|s| !LIVE_SECTIONS.contains(&s.as_str()))
    {
        let (before, after) = (old.get(section), new.get(section));
        let (Some(before_table), Some(after_table)) =
            (as_table(before, &empty), as_table(after, &empty))
        else {
            if before != after {
                waiting.push(section.clone());
            }
            continue;
        };
        let settings: BTreeSet<&String> = before_table.keys().chain(after_table.keys()).collect();
        for setting in settings {
            let path = format!("{section}.{setting}");
            if !LIVE_SETTINGS.contains(&path.as_str())
                && before_table.get(setting) != after_table.get(setting)
            {
                waiting.push(path);
            }
        }
    }
    waiting
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_settings_a_reload_cannot_apply_are_named() {
        let old: toml::Table = "trusted_proxies = [\"10.0.0.1\"]\n[limits]\nanonymous_per_minute = 10\nmax_connections = 100\n[timeouts]\nrequest = \"10s\"\n"
            .parse()
            .expect("TOML");
        let new: toml::Table = "trusted_proxies = []\n[limits]\nanonymous_per_minute = 20\nmax_connections = 200\n[health]\ncache = \"2s\"\n[database]\npool_size = 4\n"
            .parse()
            .expect("TOML");
        assert_eq!(
            needs_restart(&old, &new),
            [
                "database.pool_size",
                "limits.max_connections",
                "timeouts.request"
            ]
        );
        assert!(needs_restart(&old, &old).is_empty());
    }
}
