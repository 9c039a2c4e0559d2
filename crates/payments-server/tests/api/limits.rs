//! `GET /api/v1/rate-limits`, and the limits applied to payments.

use crate::support::{ALICE, Api, CAROL, on_every_backend, payment, unique};

on_every_backend!(crate::CONFIG; the_callers_limits_are_reported_without_consuming,
    the_payments_policy_counts_every_payment_request);

async fn the_callers_limits_are_reported_without_consuming(api: &Api) {
    api.pay(ALICE, &unique("order"), &payment("1.00", "card"))
        .await
        .expect(201);
    let limits = api.get("/api/v1/rate-limits", Some(ALICE)).await;
    limits.expect(200);
    let policies = limits.json()["policies"]
        .as_array()
        .expect("policies")
        .clone();
    let names: Vec<_> = policies
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default())
        .collect();
    // The global policy counts everyone's requests: not shown to anyone.
    assert_eq!(names, ["per-user", "payments", "burst"]);
    let payments = &policies[1];
    assert_eq!(payments["limit"], 30);
    assert_eq!(payments["window_seconds"], 60.0);
    assert_eq!(payments["remaining"], 29, "{payments}");
    assert_eq!(payments["endpoint"], "POST /api/v1/payments");
    for field in ["scope", "algorithm", "reset"] {
        assert!(!payments[field].is_null(), "{field}");
    }
    let again = api.get("/api/v1/rate-limits", Some(ALICE)).await.json();
    assert_eq!(
        again["policies"][1]["remaining"], 29,
        "reading consumes nothing"
    );
}

async fn the_payments_policy_counts_every_payment_request(api: &Api) {
    // 30 a minute for carol, whatever the requests' fate.
    for _ in 0..30 {
        api.pay(CAROL, &unique("order"), "{").await.expect(400);
    }
    let limited = api
        .pay(CAROL, &unique("order"), &payment("1.00", "card"))
        .await;
    limited.expect(429);
    assert_eq!(limited.json()["policy"], "payments");
    let wait: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(wait >= 1);
    assert_eq!(
        limited.header("ratelimit-policy"),
        Some("\"payments\";q=30;w=60")
    );
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    // Another user is not affected.
    api.pay(ALICE, &unique("order"), &payment("1.00", "card"))
        .await
        .expect(201);
    let metrics = api.get("/metrics", None).await.body;
    for line in [
        "payment_requests_total{outcome=\"rate_limited\"} 1",
        "rate_limit_exceeded_total{policy=\"payments\"} 1",
        "payment_requests_total{outcome=\"rejected\"} 30",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}
