//! Tiers, shadow policies and custom dimensions: who gets which limits, from the configuration
//! file, and changed by a reload.

use crate::support::{ALICE, Api, BOB, CAROL, on_every_backend, payment, unique};

/// Payments: 2 a minute by default, 4 for the premium tier (alice); a shadow policy of one
/// payment a minute for everyone; 3 a minute per merchant, from `Merchant-Id`.
const TIERS: &str = r#"
[testing]
payment_methods = true
[processor]
latency = "1ms"
[[policy]]
name = "payments"
scope = "user"
algorithm = "sliding-window"
limit = 2
window = "60s"
endpoint = "POST /api/v1/payments"
[[policy]]
name = "strict"
scope = "user"
algorithm = "sliding-window"
limit = 1
window = "60s"
endpoint = "POST /api/v1/payments"
mode = "shadow"
[[policy]]
name = "per-merchant"
scope = "dimension"
dimension = "merchant"
algorithm = "sliding-window"
limit = 3
window = "60s"
endpoint = "POST /api/v1/payments"
[dimension.merchant]
header = "Merchant-Id"
[tier.premium]
users = ["alice"]
[tier.premium.policy.payments]
limit = 4
"#;

on_every_backend!(super::TIERS; a_premium_user_gets_its_tiers_limit_and_others_the_default,
    a_shadow_policy_refuses_nothing_and_counts_what_it_would_deny,
    a_custom_dimension_limits_per_merchant_across_replicas,
    a_reload_moves_a_user_to_another_tier_keeping_what_it_used);

/// `key` pays, for `merchant` if any: the status.
async fn pay(api: &Api, key: &str, merchant: Option<&str>) -> u16 {
    let auth = format!("Bearer {key}");
    let order = unique("order");
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
        ("Idempotency-Key", order.as_str()),
    ];
    if let Some(merchant) = merchant {
        headers.push(("Merchant-Id", merchant));
    }
    let body = payment("1.00", "card");
    api.call("POST", "/api/v1/payments", &headers, body)
        .await
        .status
}

/// How many of `count` payments by `key` were admitted.
async fn admitted(api: &Api, key: &str, count: usize) -> usize {
    let mut admitted = 0;
    for _ in 0..count {
        if pay(api, key, None).await == 201 {
            admitted += 1;
        }
    }
    admitted
}

async fn a_premium_user_gets_its_tiers_limit_and_others_the_default(api: &Api) {
    assert_eq!(admitted(api, ALICE, 6).await, 4, "premium: 4 a minute");
    assert_eq!(admitted(api, BOB, 6).await, 2, "the default: 2 a minute");
    let alice = api.get("/api/v1/rate-limits", Some(ALICE)).await.json();
    assert_eq!(alice["tier"], "premium");
    let payments = |report: &serde_json::Value| {
        let policies = report["policies"].as_array().cloned().unwrap_or_default();
        let found = policies.into_iter().find(|p| p["name"] == "payments");
        found.expect("the payments policy")
    };
    assert_eq!(payments(&alice)["limit"], 4);
    let bob = api.get("/api/v1/rate-limits", Some(BOB)).await.json();
    assert!(bob["tier"].is_null(), "{bob}");
    assert_eq!(payments(&bob)["limit"], 2);
    let strict = bob["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .find(|p| p["name"] == "strict");
    assert_eq!(
        strict.expect("the shadow policy is shown")["mode"],
        "shadow"
    );
}

async fn a_shadow_policy_refuses_nothing_and_counts_what_it_would_deny(api: &Api) {
    // `strict` allows one a minute: bob's second payment would have been refused.
    assert_eq!(admitted(api, BOB, 2).await, 2);
    let metrics = api.get("/metrics", None).await.body;
    let line = "rate_limit_decisions_total{policy=\"strict\",result=\"would-deny\"} 1";
    assert!(metrics.contains(line), "{line} in\n{metrics}");
    // A refusal by an enforced policy is not also counted against the shadow.
    assert_eq!(admitted(api, BOB, 1).await, 0);
    let metrics = api.get("/metrics", None).await.body;
    assert!(metrics.contains(line), "still 1:\n{metrics}");
}

async fn a_custom_dimension_limits_per_merchant_across_replicas(api: &Api) {
    let other = api.replica(TIERS).await;
    let second = other.as_ref().unwrap_or(api);
    let merchant = unique("m");
    // Three a minute for the merchant, whoever pays and on whichever replica.
    assert_eq!(pay(api, ALICE, Some(&merchant)).await, 201);
    assert_eq!(pay(second, BOB, Some(&merchant)).await, 201);
    assert_eq!(pay(api, CAROL, Some(&merchant)).await, 201);
    let refused = pay(second, ALICE, Some(&merchant)).await;
    assert_eq!(refused, 429, "the merchant's fourth payment");
    // Another merchant, and payments with no merchant, are not affected.
    assert_eq!(pay(second, ALICE, Some(&unique("m"))).await, 201);
    assert_eq!(pay(api, BOB, None).await, 201);
}

async fn a_reload_moves_a_user_to_another_tier_keeping_what_it_used(api: &Api) {
    assert_eq!(admitted(api, CAROL, 3).await, 2, "the default");
    // Carol joins the premium tier: her two payments still count against its four.
    api.reload(&TIERS.replace("users = [\"alice\"]", "users = [\"alice\", \"carol\"]"));
    assert_eq!(admitted(api, CAROL, 3).await, 2);
    let report = api.get("/api/v1/rate-limits", Some(CAROL)).await.json();
    assert_eq!(report["tier"], "premium");
}
