//! The server behind PgBouncer in transaction mode (`TEST_PGBOUNCER_URL`, started by
//! `.ci/pgbouncer`), statements sent unnamed: `tollgate-load` at concurrency 16 answers no 5xx
//! and its audit finds every payment once.

use crate::load;
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
    let options = services
        .options()
        .env("DATABASE_URL", &pooler)
        .env("API_KEYS", &load::api_keys(50))
        .toml(&format!(
            "{POLICIES}[database]\nprepared_statements = false\n"
        ));
    let server = Server::start(&options);
    load::finish_clean(load::start(server.port, 50, "5s"));
    let rows = services.count("SELECT count(*) FROM {schema}.payments");
    assert!(rows > 100, "{rows} payments");
}
