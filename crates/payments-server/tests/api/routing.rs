//! Routing, authentication and request ids.

use crate::support::{ALICE, Api, on_every_backend, payment, unique};

on_every_backend!(crate::CONFIG; unknown_paths_and_methods, every_api_route_needs_a_key,
    request_ids_are_kept_when_plain_and_replaced_otherwise, bodies_over_64_kib_are_refused);

async fn unknown_paths_and_methods(api: &Api) {
    api.get("/nope", None).await.expect(404);
    let wrong = api.get("/api/v1/payments", Some(ALICE)).await;
    wrong.expect(405);
    assert_eq!(wrong.header("allow"), Some("POST"));
    let delete = api.call("DELETE", "/health", &[], "").await;
    delete.expect(405);
    assert!(delete.header("allow").is_some_and(|a| a.contains("GET")));
    // A method a client invents is refused like any other, and never becomes a label.
    api.call("BREW", "/health", &[], "").await.expect(405);
    let metrics = api.get("/metrics", None).await.body;
    assert!(!metrics.contains("BREW"), "{metrics}");
    assert!(metrics.contains("method=\"other\""), "{metrics}");
}

async fn every_api_route_needs_a_key(api: &Api) {
    let body = payment("99.99", "credit_card");
    let anonymous = api
        .call(
            "POST",
            "/api/v1/payments",
            &[("Content-Type", "application/json")],
            body.clone(),
        )
        .await;
    anonymous.expect(401);
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Bearer realm=\"tollgate\"")
    );
    api.pay("not-a-key", &unique("key"), &body)
        .await
        .expect(401);
    for path in [
        "/api/v1/rate-limits",
        "/api/v1/audit-logs",
        "/api/v1/payments/txn_1",
    ] {
        api.get(path, None).await.expect(401);
    }
    let simulate = api
        .call("POST", "/api/v1/simulate-concurrent", &[], body)
        .await;
    simulate.expect(401);
}

async fn request_ids_are_kept_when_plain_and_replaced_otherwise(api: &Api) {
    let kept = api
        .call(
            "GET",
            "/health",
            &[("X-Request-Id", "client-chosen-id-1")],
            "",
        )
        .await;
    assert_eq!(kept.header("x-request-id"), Some("client-chosen-id-1"));
    let replaced = api
        .call("GET", "/health", &[("X-Request-Id", "not plain!")], "")
        .await;
    let id = replaced.header("x-request-id").expect("an id");
    assert_eq!(id.len(), 36, "a fresh UUIDv7: {id}");
    let fresh = api.get("/health", None).await;
    assert!(fresh.header("x-request-id").is_some());
}

async fn bodies_over_64_kib_are_refused(api: &Api) {
    let huge = vec![b'x'; 70 * 1024];
    let auth = format!("Bearer {ALICE}");
    let key = unique("order");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
        ("Idempotency-Key", key.as_str()),
    ];
    api.call("POST", "/api/v1/payments", &headers, huge.clone())
        .await
        .expect(413);
    api.call("GET", "/health", &[], huge).await.expect(413);
}
