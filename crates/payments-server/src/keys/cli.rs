//! `payments-server keys …`: managing keys from the command line, against the same store the
//! server reads (`DATABASE_URL` and `DATABASE_SCHEMA`, or `KEYS_FILE`) and the tiers of the
//! same `TOLLGATE_CONFIG`. A secret is printed once, as the last line of standard output.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use super::{Change, KeyRecord, KeyStore, no_such_key, secret};
use crate::auth::unix_now;
use crate::config::{Config, check_user};

/// What `payments-server keys` does.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Creates a key for a user and prints its id, then its secret as the last line: shown
    /// this once, since only its digest is stored.
    Create {
        /// The user the key authenticates.
        #[arg(long)]
        user: String,
        /// A tier of `TOLLGATE_CONFIG` whose limits the key gets.
        #[arg(long)]
        tier: Option<String>,
        /// Refused from this long after now on (`90d`, `12h`).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
        /// A note for people (where the key is used).
        #[arg(long)]
        label: Option<String>,
    },
    /// Lists every key, never a secret: id, user, tier, label, created, expires, revoked,
    /// last used.
    List {
        /// A JSON array of objects, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Refuses a key from now on, on every replica within two seconds.
    Revoke {
        /// The key's id (`key_…`).
        id: String,
    },
    /// Gives a key's user a new secret with the same tier and label, printed as `create` does;
    /// the old secret keeps working until it expires.
    Roll {
        /// The key's id (`key_…`).
        id: String,
        /// How long the old secret keeps working (`0s` refuses it at once).
        #[arg(long, value_parser = humantime::parse_duration)]
        expire_old_in: Duration,
    },
    /// Moves a key to another tier (`none`: the default policies).
    SetTier {
        /// The key's id (`key_…`).
        id: String,
        /// A tier of `TOLLGATE_CONFIG`, or `none`.
        tier: String,
    },
}

/// Runs `command`: what it prints on standard output, the secret (if any) last.
pub async fn run(config: &Config, command: &KeysCommand) -> Result<Vec<String>, String> {
    let store = super::watch::open(config).await?.ok_or(
        "no key store: set DATABASE_URL (keys in PostgreSQL) or KEYS_FILE (keys in a file)",
    )?;
    let now = unix_now();
    match command {
        KeysCommand::Create {
            user,
            tier,
            expires_in,
            label,
        } => {
            check_user(user).map_err(|e| format!("--user: {e}"))?;
            let tier = checked_tier(config, tier.as_deref())?;
            let label = checked_label(label.as_deref())?;
            let expires_at = expires_in.map(|d| now.saturating_add(seconds(d)));
            let (record, secret) = new_key(user, tier, label, now, expires_at)?;
            store.apply(&[Change::Insert(record.clone())]).await?;
            Ok(vec![describe("created", &record), secret])
        }
        KeysCommand::List { json } => {
            let records = store.records().await?;
            Ok(if *json {
                let rows: Vec<_> = records.iter().map(as_json).collect();
                vec![serde_json::Value::Array(rows).to_string()]
            } else {
                table(&records)
            })
        }
        KeysCommand::Revoke { id } => {
            store
                .apply(&[Change::Revoke {
                    id: id.clone(),
                    at: now,
                }])
                .await?;
            Ok(vec![format!(
                "revoked {id}: refused on every replica within 2 s"
            )])
        }
        KeysCommand::Roll { id, expire_old_in } => roll(&store, id, *expire_old_in, now).await,
        KeysCommand::SetTier { id, tier } => {
            let tier = (tier != "none").then_some(tier.as_str());
            let tier = checked_tier(config, tier)?.map(str::to_owned);
            let change = Change::SetTier {
                id: id.clone(),
                tier: tier.clone(),
            };
            store.apply(&[change]).await?;
            let tier = tier.as_deref().unwrap_or("none (the default policies)");
            Ok(vec![format!(
                "{id} is in tier {tier} on every replica within 2 s"
            )])
        }
    }
}

/// A new secret for the user and tier of key `id`, the old one expiring `expire_old_in` from
/// now (or earlier, if it already would).
async fn roll(
    store: &KeyStore,
    id: &str,
    expire_old_in: Duration,
    now: i64,
) -> Result<Vec<String>, String> {
    let records = store.records().await?;
    let old = (records.iter().find(|r| r.id == id)).ok_or_else(|| no_such_key(id))?;
    if old.revoked_at.is_some() {
        return Err(format!("{id} is revoked: create a new key instead"));
    }
    let (record, secret) = new_key(
        &old.user,
        old.tier.as_deref(),
        old.label.as_deref(),
        now,
        old.expires_at,
    )?;
    let old_until = now.saturating_add(seconds(expire_old_in));
    let changes = [
        Change::Insert(record.clone()),
        Change::ExpireBy {
            id: id.to_owned(),
            at: old_until,
        },
    ];
    store.apply(&changes).await?;
    Ok(vec![
        format!("{id} keeps working until {}", time(Some(old_until))),
        describe("created", &record),
        secret,
    ])
}

fn new_key(
    user: &str,
    tier: Option<&str>,
    label: Option<&str>,
    now: i64,
    expires_at: Option<i64>,
) -> Result<(KeyRecord, String), String> {
    let secret = secret::new_secret()?;
    let record = KeyRecord {
        id: secret::new_id()?,
        user: user.to_owned(),
        tier: tier.map(str::to_owned),
        label: label.map(str::to_owned),
        digest: secret::digest(secret.as_bytes()),
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    Ok((record, secret))
}

/// `tier`, if `TOLLGATE_CONFIG` defines it.
fn checked_tier<'t>(config: &Config, tier: Option<&'t str>) -> Result<Option<&'t str>, String> {
    let Some(tier) = tier else {
        return Ok(None);
    };
    let policies = config.file()?.policy_set()?;
    if policies.has_tier(tier) {
        return Ok(Some(tier));
    }
    let known: Vec<_> = policies.tiers().collect();
    Err(format!(
        "--tier: `{tier}` is not a tier of TOLLGATE_CONFIG (its tiers: {})",
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    ))
}

fn checked_label(label: Option<&str>) -> Result<Option<&str>, String> {
    match label {
        Some(label) if label.chars().count() > 100 || label.chars().any(char::is_control) => {
            Err("--label: at most 100 characters, none of them control characters".to_owned())
        }
        _ => Ok(label),
    }
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// A Unix time as RFC 3339 (UTC, seconds), or `-`.
fn time(at: Option<i64>) -> String {
    let Some(at) = at.and_then(|at| u64::try_from(at).ok()) else {
        return "-".to_owned();
    };
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(at)).to_string()
}

fn describe(what: &str, record: &KeyRecord) -> String {
    format!(
        "{what} {} for user {} (tier {}), expires {}",
        record.id,
        record.user,
        record.tier.as_deref().unwrap_or("none"),
        time(record.expires_at)
    )
}

fn as_json(record: &KeyRecord) -> serde_json::Value {
    let at = |t: Option<i64>| t.map(|t| time(Some(t)));
    json!({
        "id": record.id,
        "user": record.user,
        "tier": record.tier,
        "label": record.label,
        "created_at": time(Some(record.created_at)),
        "expires_at": at(record.expires_at),
        "revoked_at": at(record.revoked_at),
        "last_used_at": at(record.last_used_at),
    })
}

fn table(records: &[KeyRecord]) -> Vec<String> {
    let header = [
        "ID",
        "USER",
        "TIER",
        "LABEL",
        "CREATED",
        "EXPIRES",
        "REVOKED",
        "LAST USED",
    ];
    let rows: Vec<[String; 8]> = (records.iter())
        .map(|r| {
            [
                r.id.clone(),
                r.user.clone(),
                r.tier.clone().unwrap_or_else(|| "-".to_owned()),
                r.label.clone().unwrap_or_else(|| "-".to_owned()),
                time(Some(r.created_at)),
                time(r.expires_at),
                time(r.revoked_at),
                time(r.last_used_at),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..8)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = (cells.iter().zip(&widths))
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    std::iter::once(line(header.to_vec()))
        .chain(
            rows.iter()
                .map(|r| line(r.iter().map(String::as_str).collect())),
        )
        .collect()
}
