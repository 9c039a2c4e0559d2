//! A rollout of several replicas on a new database: every process migrates the same fresh
//! schema at the same moment, and every one must come up.

use std::time::Duration;

use crate::support::{ALICE, Isolated, Server, payment, unique};

#[test]
fn six_processes_started_together_on_a_fresh_schema_all_come_up() {
    let Some(services) =
        Isolated::new("six_processes_started_together_on_a_fresh_schema_all_come_up")
    else {
        return;
    };
    // Spawned back to back, before any of them had a chance to migrate.
    let mut servers: Vec<_> = (0..6).map(|_| Server::spawn(&services.options())).collect();
    for server in &mut servers {
        server.wait_until_listening();
    }
    for server in &servers {
        let ready = server.get("/ready", None);
        ready.expect(200);
        assert_eq!(ready.json()["services"]["database"]["status"], "up");
        server
            .pay(ALICE, &unique("order"), &payment("1.00", "card"))
            .expect(201);
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(services.count("SELECT count(*) FROM {schema}.payments"), 6);
    assert_eq!(
        services.count(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{schema}'"
        ),
        6,
        "idempotency records, audit events, payments, API keys and their version, applied migrations"
    );
}

/// A database user without `CREATE` rights: the DBA applies `payments-server migrations`, the
/// server runs with `database.migrate = false`, checks the tables and serves; on a schema
/// without them it refuses to start, naming the missing table.
#[test]
fn a_user_without_create_rights_runs_on_migrations_applied_for_it() {
    let Some(services) =
        Isolated::new("a_user_without_create_rights_runs_on_migrations_applied_for_it")
    else {
        return;
    };
    let binary = env!("CARGO_BIN_EXE_payments-server");
    let printed = std::process::Command::new(binary)
        .arg("migrations")
        .env("DATABASE_SCHEMA", &services.schema)
        .output()
        .expect("runs");
    assert!(printed.status.success(), "{printed:?}");
    services.execute(&String::from_utf8(printed.stdout).expect("SQL text"));
    let role = format!("{}_app", services.schema);
    services.execute(&format!(
        "CREATE ROLE {role} LOGIN; GRANT USAGE ON SCHEMA {{schema}} TO {role}; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {{schema}} TO {role}; \
         GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {{schema}} TO {role};"
    ));
    let (_, rest) = services.database_url.split_once("://").expect("a URL");
    let (_, host) = rest.rsplit_once('@').unwrap_or(("", rest));
    let as_role = format!("postgres://{role}@{host}");
    let options = services
        .options()
        .env("DATABASE_URL", &as_role)
        .toml("[database]\nmigrate = false");
    {
        let server = Server::start(&options);
        server
            .pay(ALICE, &unique("order"), &payment("3.00", "card"))
            .expect(201);
        server.get("/ready", None).expect(200);
    }
    let empty = options
        .clone()
        .env("DATABASE_SCHEMA", &format!("{}_empty", services.schema));
    let mut refused = Server::spawn(&empty);
    let status = refused.exit_status();
    assert!(!status.success());
    let mut stderr = String::new();
    if let Some(mut pipe) = refused.child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    assert!(
        stderr.contains("DATABASE_URL") && stderr.contains("idempotency_records is missing"),
        "{stderr}"
    );
    services.execute(&format!(
        "DROP SCHEMA {{schema}} CASCADE; DROP SCHEMA IF EXISTS {{schema}}_empty; DROP ROLE {role};"
    ));
}

/// Tables keyed without their user: the count of a schema's primary keys that do not start
/// with `user_id`, reference tables (keys, versions, migrations) aside.
const KEYED_WITHOUT_USER: &str = "SELECT count(*) FROM pg_index i \
    JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0] \
    WHERE i.indisprimary AND n.nspname = '{schema}' AND a.attname <> 'user_id' \
    AND c.relname NOT IN ('api_keys', 'api_keys_version', 'tollgate_migrations')";

/// Ready to distribute by user: every table the payment path writes has `user_id` first in its
/// primary key, also on a schema made before it had (the migration moves the key, keeping
/// the rows).
#[test]
fn every_table_is_keyed_by_user_first_even_after_an_upgrade() {
    let Some(services) = Isolated::new("every_table_is_keyed_by_user_first") else {
        return;
    };
    services.execute(
        "CREATE SCHEMA {schema}; \
         CREATE TABLE {schema}.payments (transaction_id text PRIMARY KEY, user_id text NOT NULL, \
             idempotency_key text, status text NOT NULL, amount_minor bigint NOT NULL, \
             currency text NOT NULL, description text, payment_method text NOT NULL, \
             metadata jsonb NOT NULL, decline_code text, created_at timestamptz NOT NULL, \
             updated_at timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO {schema}.payments VALUES ('txn_old', 'alice', 'k', 'succeeded', 100, 'USD', \
             NULL, 'card', '{}', NULL, now(), now()); \
         CREATE TABLE {schema}.audit_events (id uuid PRIMARY KEY, occurred_at timestamptz NOT NULL, \
             user_id text NOT NULL, action text NOT NULL, outcome text NOT NULL, status_code integer, \
             idempotency_key text, transaction_id text, request_id text, latency_us bigint, \
             fields jsonb NOT NULL DEFAULT '{}');",
    );
    assert_eq!(services.count(KEYED_WITHOUT_USER), 2, "the old keys");
    let server = Server::start(&services.options());
    assert_eq!(
        services.count(KEYED_WITHOUT_USER),
        0,
        "every key starts with the user"
    );
    assert_eq!(
        services.count("SELECT count(*) FROM {schema}.payments"),
        1,
        "rows kept"
    );
    let old = server.get("/api/v1/payments/txn_old", Some(ALICE));
    old.expect(200);
    server
        .pay(ALICE, &unique("order"), &payment("1.00", "card"))
        .expect(201);
}
