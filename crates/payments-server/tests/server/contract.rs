//! Every route and every status code of the contract, on memory backends and on Redis +
//! PostgreSQL.

use std::time::{Duration, Instant};

use crate::support::{
    payment, send, send_bytes, unique, Isolated, Options, Server, ALICE, BOB, CAROL,
};

/// Slow enough payments that a duplicate sent 100 ms later finds the first in flight, with a
/// duplicate wait shorter than that; limits high enough for the whole contract run.
const CONTRACT_CONFIG: &str = r#"
[processor]
latency = "400ms"
[idempotency]
wait = "100ms"
[[policy]]
name = "global"
scope = "global"
algorithm = "sliding-window"
limit = 5000
window = "60s"
[[policy]]
name = "per-user"
scope = "user"
algorithm = "sliding-window"
limit = 500
window = "60s"
[[policy]]
name = "payments"
scope = "user"
algorithm = "sliding-window"
limit = 30
window = "60s"
endpoint = "POST /api/v1/payments"
[[policy]]
name = "burst"
scope = "user"
algorithm = "token-bucket"
limit = 20
window = "1s"
burst = 50
"#;

#[test]
fn contract_with_memory_backends() {
    let server = Server::start(&Options::default().toml(CONTRACT_CONFIG));
    contract(&server, "disabled");
}

#[test]
fn contract_with_redis_and_postgres() {
    let Some(services) = Isolated::new("contract_with_redis_and_postgres") else {
        return;
    };
    let server = Server::start(&services.options().toml(CONTRACT_CONFIG));
    contract(&server, "up");
    // One row per executed payment, never one per request: the first payment, the decline,
    // the lost answer (resumed, not charged again), the 409's first request and the simulated
    // one. Each has its completed idempotency record, committed with it.
    assert_eq!(
        services.count("SELECT count(*) FROM {schema}.payments WHERE user_id = 'alice'"),
        5
    );
    assert_eq!(
        services.count(
            "SELECT count(*) FROM {schema}.payments p JOIN {schema}.idempotency_records r \
             ON r.user_id = p.user_id AND r.key = p.idempotency_key \
             WHERE p.user_id = 'alice' AND r.state = 'completed' AND p.status <> 'pending'"
        ),
        5
    );
}

fn contract(server: &Server, service_status: &str) {
    let port = server.port;
    let alice = |key: &str, body: &str| server.pay(ALICE, key, body);

    // Probes and configuration.
    let health = server.get("/health", None);
    health.expect(200);
    let json = health.json();
    assert_eq!(json["status"], "ok");
    for service in ["redis", "database"] {
        assert_eq!(
            json["services"][service]["status"], service_status,
            "{json}"
        );
    }
    server.get("/ready", None).expect(200);
    let retry = server.get("/api/v1/retry-config", None);
    retry.expect(200);
    assert_eq!(retry.json()["max_attempts"], 3);
    assert!(retry.header("x-ratelimit-limit").is_some(), "{retry:?}");

    // Routing.
    server.get("/nope", None).expect(404);
    let wrong = server.get("/api/v1/payments", Some(ALICE));
    wrong.expect(405);
    assert_eq!(wrong.header("allow"), Some("POST"));
    send(port, "DELETE", "/health", &[], "").expect(405);

    // Authentication.
    let body = payment("99.99", "credit_card");
    let anonymous = send(
        port,
        "POST",
        "/api/v1/payments",
        &[("Content-Type", "application/json")],
        &body,
    );
    anonymous.expect(401);
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Bearer realm=\"tollgate\"")
    );
    server.pay("not-a-key", &unique("key"), &body).expect(401);
    server.get("/api/v1/rate-limits", None).expect(401);

    // A payment, its replay, and the key reused with another body.
    let key = unique("order");
    let first = send(
        port,
        "POST",
        "/api/v1/payments",
        &[
            ("Authorization", &format!("Bearer {ALICE}")),
            ("Content-Type", "application/json"),
            ("Idempotency-Key", &key),
            ("X-Request-Id", "client-chosen-id-1"),
        ],
        &body,
    );
    first.expect(201);
    assert_eq!(first.header("idempotent-replayed"), Some("false"));
    assert_eq!(first.header("x-request-id"), Some("client-chosen-id-1"));
    for header in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "ratelimit",
        "ratelimit-policy",
    ] {
        assert!(first.header(header).is_some(), "{header} in {first:?}");
    }
    let paid = first.json();
    assert_eq!(paid["status"], "succeeded");
    assert_eq!(paid["amount"], "99.99");
    assert_eq!(paid["amount_minor"], 9999);
    assert_eq!(paid["currency"], "USD");
    assert_eq!(paid["metadata"]["order_id"], "ord_1");
    let txn = paid["transaction_id"].as_str().expect("an id").to_owned();
    let location = first.header("location").expect("Location").to_owned();
    assert_eq!(location, format!("/api/v1/payments/{txn}"));

    let again = alice(&key, &body);
    again.expect(201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body, "the replay is byte for byte");
    assert_eq!(again.header("location"), Some(location.as_str()));
    assert!(again
        .header("x-request-id")
        .is_some_and(|id| id != "client-chosen-id-1"));
    alice(&key, &payment("10.00", "credit_card")).expect(422);

    // Reading payments: only the owner sees one.
    let read = server.get(&location, Some(ALICE));
    read.expect(200);
    assert_eq!(read.json()["transaction_id"], txn.as_str());
    server.get(&location, Some(BOB)).expect(404);
    server
        .get("/api/v1/payments/txn_unknown", Some(ALICE))
        .expect(404);

    // Refusals before anything runs.
    let auth = format!("Bearer {ALICE}");
    send(
        port,
        "POST",
        "/api/v1/payments",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
    .expect(400);
    alice("short", &body).expect(400);
    send(
        port,
        "POST",
        "/api/v1/payments",
        &[
            ("Authorization", &auth),
            ("Content-Type", "text/plain"),
            ("Idempotency-Key", &unique("order")),
        ],
        &body,
    )
    .expect(415);
    let huge = vec![b'x'; 70 * 1024];
    send_bytes(
        port,
        "POST",
        "/api/v1/payments",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("Idempotency-Key", &unique("order")),
        ],
        &huge,
    )
    .expect(413);
    let malformed = alice(&unique("order"), r#"{"amount": 1,"#);
    malformed.expect(400);
    assert!(
        malformed.json()["detail"]
            .as_str()
            .is_some_and(|d| d.contains("line 1")),
        "{malformed:?}"
    );
    let invalid = alice(
        &unique("order"),
        r#"{"amount": "1.001", "currency": "usd", "payment_method": "card", "metadata": {"n": 1}}"#,
    );
    invalid.expect(422);
    let fields: Vec<_> = invalid.json()["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(fields, ["currency", "amount", "metadata.n"]);

    // A decline is a stored business outcome.
    let declined_key = unique("order");
    let declined = alice(&declined_key, &payment("5.00", "test_decline"));
    declined.expect(402);
    let declined_txn = declined.json()["transaction_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let declined_again = alice(&declined_key, &payment("5.00", "test_decline"));
    declined_again.expect(402);
    assert_eq!(declined_again.header("idempotent-replayed"), Some("true"));
    let read = server.get(&format!("/api/v1/payments/{declined_txn}"), Some(ALICE));
    assert_eq!(read.json()["status"], "failed");
    assert_eq!(read.json()["decline_code"], "card_declined");

    // The processor charged but its answer was lost: 502, pending; the retry resumes and
    // reconciles instead of charging again.
    let lost_key = unique("order");
    let lost_body = payment("7.50", "test_timeout_after_charge");
    let lost = alice(&lost_key, &lost_body);
    lost.expect(502);
    let lost_txn = lost.json()["transaction_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let pending = server.get(&format!("/api/v1/payments/{lost_txn}"), Some(ALICE));
    assert_eq!(pending.json()["status"], "pending");
    let resumed = alice(&lost_key, &lost_body);
    resumed.expect(201);
    assert_eq!(
        resumed.json()["transaction_id"],
        lost_txn.as_str(),
        "the same payment"
    );
    let settled = server.get(&format!("/api/v1/payments/{lost_txn}"), Some(ALICE));
    assert_eq!(settled.json()["status"], "succeeded");

    // A duplicate while the first is in flight: 409 with Retry-After once the wait is over.
    let busy_key = unique("order");
    let busy_body = payment("1.00", "credit_card");
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(|| alice(&busy_key, &busy_body));
        std::thread::sleep(Duration::from_millis(100));
        let second = alice(&busy_key, &busy_body);
        (first.join().expect("first request"), second)
    });
    first.expect(201);
    second.expect(409);
    assert!(second
        .header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|s| s >= 1));

    // The caller's limits.
    let limits = server.get("/api/v1/rate-limits", Some(ALICE));
    limits.expect(200);
    let policies = limits.json()["policies"]
        .as_array()
        .expect("policies")
        .clone();
    let names: Vec<_> = policies
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["global", "per-user", "payments", "burst"]);
    let payments = &policies[2];
    assert_eq!(payments["limit"], 30);
    assert_eq!(payments["window_seconds"], 60.0);
    assert!(
        payments["remaining"].as_u64().is_some_and(|r| r < 30),
        "{payments}"
    );
    for field in ["scope", "algorithm", "reset"] {
        assert!(!payments[field].is_null(), "{field}");
    }

    // Concurrent same-key requests through the whole pipeline.
    let simulate = |query: &str, content_type: &str| {
        send(
            port,
            "POST",
            &format!("/api/v1/simulate-concurrent{query}"),
            &[("Authorization", &auth), ("Content-Type", content_type)],
            &payment("50.00", "credit_card"),
        )
    };
    let report = simulate("?concurrent_count=5", "application/json");
    report.expect(200);
    let report = report.json();
    assert_eq!(report["concurrent_count"], 5);
    assert_eq!(report["executed"], 1, "{report}");
    let answered = ["executed", "replayed", "conflicted"]
        .iter()
        .map(|f| report[f].as_u64().unwrap_or(0))
        .sum::<u64>();
    assert_eq!(answered, 5, "{report}");
    assert_eq!(
        report["transaction_ids"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    simulate("?concurrent_count=0", "application/json").expect(400);
    simulate("?concurrent_count=101", "application/json").expect(400);
    simulate("", "text/plain").expect(415);

    // The audit trail: the caller's own, newest first, paginated.
    let deadline = Instant::now() + Duration::from_secs(5);
    let entries = loop {
        let page = server.get("/api/v1/audit-logs?limit=100", Some(ALICE));
        page.expect(200);
        let entries = page.json()["entries"].as_array().expect("entries").clone();
        // Refusals are recorded off the request path: wait for the 409's entry.
        if entries
            .iter()
            .any(|e| e["action"] == "idempotency_conflict")
            || Instant::now() > deadline
        {
            break entries;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let actions: Vec<_> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default())
        .collect();
    for action in [
        "payment_attempt",
        "payment_replay",
        "idempotency_mismatch",
        "idempotency_conflict",
        "validation_failed",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    assert!(entries.iter().all(|e| e["user_id"] == "alice"));
    assert!(entries
        .iter()
        .any(|e| e["transaction_id"] == txn.as_str() && e["action"] == "payment_attempt"));
    let ids: Vec<_> = entries
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "newest first");
    for field in [
        "timestamp",
        "outcome",
        "status_code",
        "idempotency_key",
        "request_id",
    ] {
        assert!(entries[0].get(field).is_some(), "{field}");
    }
    let page1 = server.get("/api/v1/audit-logs?limit=2", Some(ALICE)).json();
    let cursor = page1["next_cursor"].as_str().expect("a next page");
    let page2 = server
        .get(
            &format!("/api/v1/audit-logs?limit=2&cursor={cursor}"),
            Some(ALICE),
        )
        .json();
    assert_eq!(page2["entries"][0]["id"], ids[2].as_str());
    server
        .get("/api/v1/audit-logs?limit=0", Some(ALICE))
        .expect(400);
    server
        .get("/api/v1/audit-logs?limit=x", Some(ALICE))
        .expect(400);
    server
        .get("/api/v1/audit-logs?cursor=nope", Some(ALICE))
        .expect(400);
    let bob = server.get("/api/v1/audit-logs", Some(BOB)).json();
    assert!(bob["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .all(|e| e["user_id"] == "bob"));

    // The payments policy: 30 a minute for carol, whatever the requests' fate.
    for _ in 0..30 {
        server.pay(CAROL, &unique("order"), "{").expect(400);
    }
    let limited = server.pay(CAROL, &unique("order"), &body);
    limited.expect(429);
    assert_eq!(limited.json()["policy"], "payments");
    assert!(limited
        .header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|s| s >= 1));
    assert_eq!(
        limited.header("ratelimit-policy"),
        Some("\"payments\";q=30;w=60")
    );
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));

    // Metrics saw all of it.
    let metrics = server.get("/metrics", None);
    metrics.expect(200);
    assert!(metrics
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    for line in [
        "payment_requests_total{outcome=\"succeeded\"}",
        "payment_requests_total{outcome=\"declined\"}",
        "payment_requests_total{outcome=\"failed\"} 1",
        "payment_requests_total{outcome=\"replayed\"}",
        "payment_requests_total{outcome=\"conflicted\"}",
        "payment_requests_total{outcome=\"rate_limited\"} 1",
        "rate_limit_exceeded_total{policy=\"payments\"} 1",
        "idempotent_replays_total",
        "concurrent_conflicts_total",
        "payment_success_rate",
        "payment_processor_circuit_state 0",
        "http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/v1/payments\",status=\"201\"",
        "rate_limiter_degraded_decisions_total",
    ] {
        assert!(metrics.body.contains(line), "{line} in\n{}", metrics.body);
    }
}
