//! Managed API keys across two replicas: created, rolled, re-tiered and revoked with
//! `payments-server keys`, in force on both within two seconds, and stored as digests only.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Isolated, Options, Server, TempFile, unique};

/// One tier, so that `set-tier` has somewhere to go.
const TIERS: &str = "[tier.premium]\n[tier.premium.policy.payments]\nlimit = 100\n";

/// How long a change may take to reach a replica.
const PROPAGATION: Duration = Duration::from_secs(2);

/// `payments-server keys <args>` with `env` (the store's settings): its standard output's lines.
fn keys(env: &[(&str, &str)], args: &[&str]) -> Vec<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_payments-server"))
        .arg("keys")
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("KEYS_FILE")
        .env_remove("TOLLGATE_CONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("the command runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "keys {args:?}: {stderr}\n{stdout}");
    stdout.lines().map(str::to_owned).collect()
}

/// The status `server` answers `GET /api/v1/rate-limits` with, as `secret`.
fn status(server: &Server, secret: &str) -> u16 {
    server.get("/api/v1/rate-limits", Some(secret)).status
}

/// Waits until every one of `servers` answers `secret` with `expected`: how long that took.
fn until_every(servers: &[Server], secret: &str, expected: u16) -> Duration {
    let started = Instant::now();
    while !servers.iter().all(|s| status(s, secret) == expected) {
        assert!(
            started.elapsed() < PROPAGATION * 3,
            "still not {expected} after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

#[test]
fn keys_managed_from_the_command_line_reach_every_replica_within_two_seconds() {
    let Some(services) = Isolated::new("keys_managed_from_the_command_line") else {
        return;
    };
    let config = TempFile(std::env::temp_dir().join(format!("{}.toml", unique("tiers"))));
    std::fs::write(&config.0, TIERS).expect("the configuration");
    let config_path = config.0.to_string_lossy().into_owned();
    let env = [
        ("DATABASE_URL", services.database_url.as_str()),
        ("DATABASE_SCHEMA", services.schema.as_str()),
        ("TOLLGATE_CONFIG", config_path.as_str()),
    ];
    let servers = [
        Server::start(&services.options().toml(TIERS)),
        Server::start(&services.options().toml(TIERS)),
    ];

    let created = keys(&env, &["create", "--user", "dave", "--label", "ci"]);
    let secret = created.last().expect("the secret").clone();
    assert!(secret.starts_with("tgk_"), "{created:?}");
    let took = until_every(&servers, &secret, 200);
    eprintln!("a created key was accepted by both replicas after {took:?}");
    assert!(took <= PROPAGATION, "accepted after {took:?}");
    // A typo is refused (before any lookup), and no secret is stored or listed.
    // The last character changed (to one it is not: a secret may end in `x`).
    let last = if secret.ends_with('x') { 'y' } else { 'x' };
    let typo = format!("{}{last}", &secret[..secret.len() - 1]);
    assert_eq!(status(&servers[1], &typo), 401);
    let listed = keys(&env, &["list", "--json"]).join("\n");
    let list: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    let id = list[0]["id"].as_str().expect("an id").to_owned();
    assert_eq!(
        (list[0]["user"].as_str(), list[0]["tier"].as_str()),
        (Some("dave"), None)
    );
    assert!(!listed.contains(&secret[4..]), "{listed}");
    let leaked = format!(
        "SELECT count(*) FROM {{schema}}.api_keys k WHERE strpos(row_to_json(k)::text, '{}') > 0",
        &secret[4..20]
    );
    assert_eq!(services.count(&leaked), 0, "a secret in the table");

    // Re-tiered: both replicas decide the key's requests by the tier's policies.
    keys(&env, &["set-tier", &id, "premium"]);
    let started = Instant::now();
    while !servers
        .iter()
        .all(|s| s.get("/api/v1/rate-limits", Some(&secret)).json()["tier"] == "premium")
    {
        assert!(
            started.elapsed() < PROPAGATION,
            "not premium after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Rolled: both secrets work until the old one expires, then only the new one.
    let rolled = keys(&env, &["roll", &id, "--expire-old-in", "3s"]);
    let new_secret = rolled.last().expect("the new secret").clone();
    assert!(until_every(&servers, &new_secret, 200) <= PROPAGATION);
    assert!(
        servers.iter().all(|s| status(s, &secret) == 200),
        "the old one, before expiry"
    );
    let started = Instant::now();
    while !servers.iter().all(|s| status(s, &secret) == 401) {
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "the old secret never expired"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(servers.iter().all(|s| status(s, &new_secret) == 200));

    // Revoked: refused by both within two seconds.
    let list: serde_json::Value =
        serde_json::from_str(&keys(&env, &["list", "--json"]).join("\n")).expect("JSON");
    let new_id = list[1]["id"].as_str().expect("the new key's id").to_owned();
    keys(&env, &["revoke", &new_id]);
    let took = until_every(&servers, &new_secret, 401);
    eprintln!("a revoked key was refused by both replicas after {took:?}");
    assert!(took <= PROPAGATION, "refused after {took:?}");
}

#[test]
fn without_a_database_keys_live_in_a_file_every_replica_reads() {
    let file = TempFile(std::env::temp_dir().join(format!("{}.json", unique("keys"))));
    let path = file.0.to_string_lossy().into_owned();
    let options = Options::default().env("KEYS_FILE", &path);
    let servers = [Server::start(&options), Server::start(&options)];
    let env = [("KEYS_FILE", path.as_str())];
    let secret = keys(&env, &["create", "--user", "erin"])
        .pop()
        .expect("the secret");
    assert!(until_every(&servers, &secret, 200) <= PROPAGATION);
    let stored = std::fs::read_to_string(&file.0).expect("the keys file");
    assert!(!stored.contains(&secret[4..]), "a secret in the file");
    let id = keys(&env, &["list"])[1]
        .split_whitespace()
        .next()
        .expect("an id")
        .to_owned();
    keys(&env, &["revoke", &id]);
    assert!(until_every(&servers, &secret, 401) <= PROPAGATION);
}
