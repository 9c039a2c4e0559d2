//! Two server processes on one Redis and one PostgreSQL behave as one server.

use crate::support::{ALICE, Isolated, Server, payment, unique};

#[test]
fn two_processes_share_idempotency_and_limits() {
    let Some(services) = Isolated::new("two_processes_share_idempotency_and_limits") else {
        return;
    };
    // The default policy table: 10 payments a minute per user.
    let servers = [
        Server::start(&services.options()),
        Server::start(&services.options()),
    ];
    let key = unique("order");
    let body = payment("42.00", "credit_card");
    let responses: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..30)
            .map(|i| {
                let server = &servers[i % 2];
                let (key, body) = (&key, &body);
                scope.spawn(move || server.pay(ALICE, key, body))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a response"))
            .collect()
    });

    let admitted: Vec<_> = responses.iter().filter(|r| r.status != 429).collect();
    let limited = responses.len() - admitted.len();
    // The per-user payments limit is one limit across both processes.
    assert_eq!(admitted.len(), 10, "{responses:#?}");
    assert_eq!(limited, 20);
    // Exactly one execution; everyone admitted got its result.
    let executed = admitted
        .iter()
        .filter(|r| r.header("idempotent-replayed") == Some("false"))
        .count();
    assert_eq!(executed, 1, "{admitted:#?}");
    let ids: std::collections::BTreeSet<_> = admitted
        .iter()
        .map(|r| {
            r.expect(201);
            r.json()["transaction_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    // One payment row, whichever process executed it.
    assert_eq!(services.count("SELECT count(*) FROM {schema}.payments"), 1);
    for response in responses.iter().filter(|r| r.status == 429) {
        response.expect(429);
        assert_eq!(response.json()["policy"], "payments");
    }
}
