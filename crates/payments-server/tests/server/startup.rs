//! A rollout of several replicas on a new database: every process migrates the same fresh
//! schema at the same moment, and every one must come up.

use std::time::Duration;

use crate::support::{payment, unique, Isolated, Server, ALICE};

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
        4,
        "idempotency records, audit events, payments, simulated charges"
    );
}
