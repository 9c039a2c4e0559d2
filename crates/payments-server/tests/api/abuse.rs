//! What one client or one user controls stays bounded, in process (the process-level bounds —
//! connections, memory, audit rows, cleanup — are in `tests/server/abuse.rs`).

use std::sync::Arc;

use crate::support::{ALICE, Api, BOB, CAROL, on_every_backend, payment, unique};

on_every_backend!(crate::CONFIG; text_with_nul_is_a_400_on_every_backend,
    a_member_twice_is_a_400_before_anything_runs, authorization_is_one_bearer_header_in_any_case);

async fn text_with_nul_is_a_400_on_every_backend(api: &Api) {
    for body in [
        r#"{"amount": 1, "currency": "USD", "payment_method": "ca\u0000rd"}"#,
        r#"{"amount": 1, "currency": "USD", "payment_method": "card", "metadata": {"k": "\u0000"}}"#,
    ] {
        let refused = api.pay(ALICE, &unique("order"), body).await;
        refused.expect(400);
        assert!(refused.body.contains("NUL"), "{refused:?}");
    }
    if let Some(rows) = api.count("SELECT count(*) FROM {schema}.payments").await {
        assert_eq!(rows, 0);
    }
}

async fn a_member_twice_is_a_400_before_anything_runs(api: &Api) {
    let twice = r#"{"amount": 1, "amount": 2, "currency": "USD", "payment_method": "card"}"#;
    let refused = api.pay(ALICE, &unique("order"), twice).await;
    refused.expect(400);
    assert!(refused.body.contains("appears twice"), "{refused:?}");
}

async fn authorization_is_one_bearer_header_in_any_case(api: &Api) {
    let lower = format!("bearer {ALICE}");
    api.call(
        "GET",
        "/api/v1/rate-limits",
        &[("Authorization", &lower)],
        "",
    )
    .await
    .expect(200);
    let (alice, bob) = (format!("Bearer {ALICE}"), format!("Bearer {BOB}"));
    let two = [
        ("Authorization", alice.as_str()),
        ("Authorization", bob.as_str()),
    ];
    let refused = api.call("GET", "/api/v1/rate-limits", &two, "").await;
    refused.expect(400);
}

const FEW_ANONYMOUS: &str = "[limits]\nanonymous_per_minute = 5\n";

#[tokio::test]
async fn strangers_get_a_bounded_number_of_401s_then_429s() {
    let api = Api::memory(FEW_ANONYMOUS);
    for _ in 0..5 {
        api.get("/api/v1/rate-limits", Some("not-a-key"))
            .await
            .expect(401);
    }
    let limited = api.get("/api/v1/rate-limits", None).await;
    limited.expect(429);
    assert!(limited.header("retry-after").is_some(), "{limited:?}");
    // A caller with a key is not affected.
    api.get("/api/v1/rate-limits", Some(ALICE))
        .await
        .expect(200);
}

/// The public route counts in the strangers' bucket, never in a policy users need, and its
/// headers describe only the caller's own budget.
#[tokio::test]
async fn strangers_on_the_public_route_never_touch_users_quotas() {
    let config = "[limits]\nanonymous_per_minute = 5\n\
                  [[policy]]\nname = \"global\"\nscope = \"global\"\nalgorithm = \"sliding-window\"\n\
                  limit = 3\nwindow = \"60s\"\n\
                  [[policy]]\nname = \"per-user\"\nscope = \"user\"\nalgorithm = \"sliding-window\"\n\
                  limit = 100\nwindow = \"60s\"\n";
    let api = Api::memory(config);
    let first = api.get("/api/v1/retry-config", None).await;
    first.expect(200);
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"anonymous\";q=5;w=60"),
        "{first:?}"
    );
    for _ in 0..4 {
        api.get("/api/v1/retry-config", None).await.expect(200);
    }
    let limited = api.get("/api/v1/retry-config", None).await;
    limited.expect(429);
    assert_eq!(limited.json()["policy"], "anonymous");
    // The users' global quota is untouched: all three of its requests are still there, and no
    // header shows its count to anyone.
    for _ in 0..3 {
        let allowed = api.get("/api/v1/rate-limits", Some(ALICE)).await;
        allowed.expect(200);
        assert_eq!(
            allowed.header("ratelimit-policy"),
            Some("\"per-user\";q=100;w=60"),
            "the tighter global policy is not shown"
        );
        assert!(
            !allowed
                .header("ratelimit")
                .unwrap_or_default()
                .contains("global"),
            "{allowed:?}"
        );
    }
    let refused = api.get("/api/v1/rate-limits", Some(ALICE)).await;
    refused.expect(429);
    assert_eq!(refused.json()["policy"], "global");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(refused.header("x-ratelimit-remaining"), None, "{refused:?}");
}

/// A failure the request caused (a test payment method) never counts against the processor:
/// one user's twenty never open the breaker for another.
#[tokio::test]
async fn one_users_failures_never_open_the_breaker_for_another() {
    let api = Api::memory(
        "[processor]\nlatency = \"1ms\"\n[breaker]\nwindow_calls = 10\nminimum_calls = 5\n\
         failure_rate_threshold = 50\nwait_in_open = \"60s\"\n[testing]\npayment_methods = true\n\
         [[policy]]\nname = \"per-user\"\nscope = \"user\"\nalgorithm = \"sliding-window\"\n\
         limit = 1000\nwindow = \"60s\"\n",
    );
    for _ in 0..20 {
        api.pay(
            CAROL,
            &unique("order"),
            &payment("1.00", "test_timeout_after_charge"),
        )
        .await
        .expect(502);
    }
    api.pay(ALICE, &unique("order"), &payment("1.00", "card"))
        .await
        .expect(201);
    let metrics = api.get("/metrics", None).await.body;
    assert!(
        metrics.contains("payment_processor_circuit_state 0"),
        "{metrics}"
    );
}

/// No cache may keep a payment, its replay, a trail or a quota.
#[tokio::test]
async fn answers_are_never_cached() {
    let api = Api::memory("");
    let key = unique("order");
    let paid = api.pay(ALICE, &key, &payment("1.00", "card")).await;
    paid.expect(201);
    let replayed = api.pay(ALICE, &key, &payment("1.00", "card")).await;
    replayed.expect(201);
    let trail = api.get("/api/v1/audit-logs", Some(ALICE)).await;
    let refused = api.get("/api/v1/audit-logs", None).await;
    for answer in [paid, replayed, trail, refused] {
        assert_eq!(
            answer.header("cache-control"),
            Some("no-store"),
            "{answer:?}"
        );
    }
}

#[tokio::test]
async fn testing_features_are_off_unless_asked_for() {
    let api = Api::memory("[processor]\nlatency = \"1ms\"\n");
    let simulate = api
        .call(
            "POST",
            "/api/v1/simulate-concurrent",
            &[
                ("Authorization", &format!("Bearer {ALICE}")),
                ("Content-Type", "application/json"),
            ],
            payment("1.00", "card"),
        )
        .await;
    simulate.expect(404);
    assert!(simulate.body.contains("--testing"), "{simulate:?}");
    // An ordinary payment method like any other: charged.
    api.pay(ALICE, &unique("order"), &payment("1.00", "test_decline"))
        .await
        .expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_health_checks_costs_one_probe_per_period() {
    let api = Arc::new(Api::memory(""));
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let api = Arc::clone(&api);
        calls.spawn(async move { api.get("/health", None).await.status });
    }
    while let Some(status) = calls.join_next().await {
        assert_eq!(status.expect("a call"), 200);
    }
    let metrics = api.get("/metrics", None).await.body;
    let probes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("health_probes_total "))
        .and_then(|n| n.parse().ok())
        .expect("health_probes_total");
    assert!(probes <= 2, "{probes} probes for 200 calls");
}

/// The memory trail keeps at most `memory_events_per_user` of one user: a busy user gives way
/// before anyone else's trail does.
#[tokio::test]
async fn one_users_trail_never_pushes_out_anothers() {
    let config = format!(
        "{}[audit]\nmemory_events = 100\nmemory_events_per_user = 20\n",
        crate::CONFIG
    );
    let api = Api::memory(&config);
    api.pay(BOB, &unique("order"), &payment("1.00", "card"))
        .await
        .expect(201);
    for _ in 0..25 {
        api.pay(CAROL, &unique("order"), &payment("1.00", "card"))
            .await
            .expect(201);
    }
    let entries = |key| {
        let api = &api;
        async move {
            let page = api
                .get("/api/v1/audit-logs?limit=100", Some(key))
                .await
                .json();
            page["entries"].as_array().map_or(0, Vec::len)
        }
    };
    assert_eq!(entries(CAROL).await, 20, "carol's newest 20");
    assert_eq!(entries(BOB).await, 2, "bob's start and attempt, untouched");
}
