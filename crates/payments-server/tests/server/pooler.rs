//! The server behind PgBouncer in transaction mode (`TEST_PGBOUNCER_URL`, started by
//! `.ci/pgbouncer`), statements sent unnamed: `tollgate-load` at concurrency 16 answers no 5xx
//! and its audit finds every payment once.

use std::process::Command;

use crate::reload::sibling;
use crate::support::{Isolated, Server};

/// Limits no run reaches: the load measures the database path, not the limiter.
const POLICIES: &str = "[[policy]]\nname = \"per-user\"\nscope = \"user\"\n\
    algorithm = \"sliding-window\"\nlimit = 1000000\nwindow = \"60s\"\n";

#[test]
fn payments_through_pgbouncer_in_transaction_mode_lose_nothing() {
    let Some(services) = Isolated::new("payments_through_pgbouncer_in_transaction_mode") else {
        return;
    };
    let Ok(pooler) = std::env::var("TEST_PGBOUNCER_URL") else {
        eprintln!(
            "SKIPPED payments_through_pgbouncer_in_transaction_mode_lose_nothing: run `eval \"$(.ci/pgbouncer)\"` to start PgBouncer and set TEST_PGBOUNCER_URL"
        );
        return;
    };
    let load = sibling("tollgate-load");
    let keys = Command::new(&load)
        .args(["--print-api-keys", "--users", "50"])
        .output();
    let keys = String::from_utf8(keys.expect("tollgate-load runs").stdout).expect("text");
    let options = services
        .options()
        .env("DATABASE_URL", &pooler)
        .env("API_KEYS", keys.trim())
        .toml(&format!(
            "{POLICIES}[database]\nprepared_statements = false\n"
        ));
    let server = Server::start(&options);
    let url = format!("http://127.0.0.1:{}", server.port);
    let output = Command::new(&load)
        .args([
            "--url",
            &url,
            "--users",
            "50",
            "--concurrency",
            "16",
            "--duration",
            "5s",
        ])
        .arg("--quiet")
        .output()
        .expect("tollgate-load runs");
    let report = String::from_utf8_lossy(&output.stdout);
    eprintln!("{report}");
    assert!(report.contains(" 0 transport errors)"), "{report}");
    let statuses = report
        .lines()
        .find(|l| l.trim_start().starts_with("statuses:"));
    let statuses = statuses.expect("the statuses line");
    assert!(
        !statuses.contains("\"5"),
        "a 5xx through the pooler: {statuses}"
    );
    assert!(
        report.contains("every reply agrees, one payment per key"),
        "{report}"
    );
    let rows = services.count("SELECT count(*) FROM {schema}.payments");
    assert!(rows > 100, "{rows} payments");
}
