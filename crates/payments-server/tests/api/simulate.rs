//! `POST /api/v1/simulate-concurrent`.

use crate::support::{ALICE, Api, on_every_backend, payment};

on_every_backend!(crate::CONFIG; concurrent_copies_execute_once, a_broken_request_is_one_answer_that_consumes_nothing);

async fn simulate(api: &Api, query: &str, content_type: &str, body: &str) -> crate::support::Reply {
    let auth = format!("Bearer {ALICE}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", content_type),
    ];
    let path = format!("/api/v1/simulate-concurrent{query}");
    api.call("POST", &path, &headers, body.to_owned()).await
}

async fn concurrent_copies_execute_once(api: &Api) {
    let report = simulate(
        api,
        "?concurrent_count=5",
        "application/json",
        &payment("50.00", "card"),
    )
    .await;
    report.expect(200);
    let report = report.json();
    assert_eq!(report["concurrent_count"], 5);
    assert_eq!(report["executed"], 1, "{report}");
    let answered: u64 = ["executed", "replayed", "conflicted"]
        .iter()
        .map(|f| report[f].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(answered, 5, "{report}");
    assert_eq!(
        report["transaction_ids"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    // Each copy is a payment request of the caller: counted against the payments policy.
    let limits = api.get("/api/v1/rate-limits", Some(ALICE)).await.json();
    assert_eq!(limits["policies"][1]["remaining"], 25, "{limits}");
}

async fn a_broken_request_is_one_answer_that_consumes_nothing(api: &Api) {
    let before = api.get("/api/v1/rate-limits", Some(ALICE)).await.json();
    simulate(
        api,
        "?concurrent_count=0",
        "application/json",
        &payment("1.00", "card"),
    )
    .await
    .expect(400);
    simulate(
        api,
        "?concurrent_count=101",
        "application/json",
        &payment("1.00", "card"),
    )
    .await
    .expect(400);
    simulate(
        api,
        "?concurrent_count=x",
        "application/json",
        &payment("1.00", "card"),
    )
    .await
    .expect(400);
    simulate(api, "", "text/plain", &payment("1.00", "card"))
        .await
        .expect(415);
    // What `curl -d '{…}' --data-urlencode "concurrent_count=10"` sends.
    let appended = format!("{}&concurrent_count=10", payment("50.00", "card"));
    let broken = simulate(api, "", "application/json", &appended).await;
    broken.expect(400);
    let detail = broken.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        detail.contains("`concurrent_count` is a query parameter"),
        "{detail}"
    );
    let invalid = simulate(
        api,
        "",
        "application/json",
        r#"{"amount": -1, "currency": "USD", "payment_method": "card"}"#,
    )
    .await;
    invalid.expect(422);
    assert_eq!(invalid.json()["errors"][0]["field"], "amount");
    let after = api.get("/api/v1/rate-limits", Some(ALICE)).await.json();
    let remaining =
        |limits: &serde_json::Value, i: usize| limits["policies"][i]["remaining"].clone();
    assert_eq!(
        remaining(&after, 1),
        remaining(&before, 1),
        "no payment quota used"
    );
    // The two reads of the limits are the only requests that consumed anything.
    assert_eq!(
        remaining(&after, 0).as_u64(),
        remaining(&before, 0).as_u64().map(|r| r - 1),
        "{before} {after}"
    );
    let trail = api.get("/api/v1/audit-logs", Some(ALICE)).await.json();
    assert!(
        trail["entries"]
            .as_array()
            .is_some_and(|e| e.iter().all(|e| e["action"] != "payment_attempt")),
        "nothing was attempted: {trail}"
    );
}
