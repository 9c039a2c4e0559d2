//! `GET /api/v1/audit-logs`: what each payment request left in the caller's trail.

use std::time::{Duration, Instant};

use crate::support::{ALICE, Api, BOB, on_every_backend, payment, unique};

on_every_backend!(crate::SLOW_CONFIG; the_trail_records_every_kind_of_answer);

mod paging {
    use crate::support::{Api, on_every_backend};

    on_every_backend!(crate::CONFIG; the_trail_is_paged_newest_first, refusals_are_folded_per_window);

    async fn the_trail_is_paged_newest_first(api: &Api) {
        super::the_trail_is_paged_newest_first(api).await;
    }

    async fn refusals_are_folded_per_window(api: &Api) {
        super::refusals_are_folded_per_window(api).await;
    }
}

/// The caller's entries, once `action` is among them (refusals on PostgreSQL go through the
/// sink's queue).
async fn entries_with(api: &Api, key: &str, action: &str) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let page = api.get("/api/v1/audit-logs?limit=100", Some(key)).await;
        page.expect(200);
        let entries = page.json()["entries"].as_array().expect("entries").clone();
        if entries.iter().any(|e| e["action"] == action) || Instant::now() > deadline {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn the_trail_records_every_kind_of_answer(api: &Api) {
    let key = unique("order");
    let body = payment("2.00", "card");
    let paid = api.pay(ALICE, &key, &body).await;
    paid.expect(201);
    api.pay(ALICE, &key, &body).await.expect(201);
    api.pay(ALICE, &key, &payment("3.00", "card"))
        .await
        .expect(422);
    api.pay(ALICE, &unique("order"), r#"{"amount": 1,"#)
        .await
        .expect(400);
    crate::payments::a_duplicate_in_flight_gets_409(api).await;
    let entries = entries_with(api, ALICE, "idempotency_conflict").await;
    let actions: Vec<_> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default())
        .collect();
    for action in [
        "payment_started",
        "payment_attempt",
        "payment_replay",
        "idempotency_mismatch",
        "idempotency_conflict",
        "validation_failed",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    assert!(entries.iter().all(|e| e["user_id"] == "alice"));
    let txn = paid.json()["transaction_id"].clone();
    assert!(
        entries
            .iter()
            .any(|e| e["transaction_id"] == txn && e["action"] == "payment_attempt")
    );
    for field in [
        "timestamp",
        "outcome",
        "status_code",
        "idempotency_key",
        "request_id",
    ] {
        assert!(entries[0].get(field).is_some(), "{field}");
    }
    let bob = api.get("/api/v1/audit-logs", Some(BOB)).await.json();
    assert_eq!(bob["entries"].as_array().map(Vec::len), Some(0), "{bob}");
}

async fn the_trail_is_paged_newest_first(api: &Api) {
    for _ in 0..2 {
        api.pay(ALICE, &unique("order"), &payment("1.00", "card"))
            .await
            .expect(201);
    }
    let entries = entries_with(api, ALICE, "payment_attempt").await;
    let ids: Vec<_> = entries
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids.len(), 4, "two starts, two attempts: {ids:?}");
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "newest first");
    let page1 = api
        .get("/api/v1/audit-logs?limit=2", Some(ALICE))
        .await
        .json();
    let cursor = page1["next_cursor"].as_str().expect("a next page");
    let page2 = api
        .get(
            &format!("/api/v1/audit-logs?limit=2&cursor={cursor}"),
            Some(ALICE),
        )
        .await
        .json();
    assert_eq!(page2["entries"][0]["id"], ids[2].as_str());
    for bad in ["limit=0", "limit=x", "cursor=nope", "limit=101"] {
        api.get(&format!("/api/v1/audit-logs?{bad}"), Some(ALICE))
            .await
            .expect(400);
    }
}

/// Twenty-five malformed payments in a moment are one `validation_failed` entry, not
/// twenty-five: refusals of one user for one reason are folded per window (the window's count
/// follows when it ends).
async fn refusals_are_folded_per_window(api: &Api) {
    for _ in 0..25 {
        api.pay(ALICE, &unique("order"), "{").await.expect(400);
    }
    let entries = entries_with(api, ALICE, "validation_failed").await;
    let refusals = entries
        .iter()
        .filter(|e| e["action"] == "validation_failed")
        .count();
    assert_eq!(refusals, 1, "{entries:?}");
    let metrics = api.get("/metrics", None).await.body;
    assert!(
        metrics.contains("audit_refusals_folded_total 24"),
        "{metrics}"
    );
    assert!(
        metrics.contains("payment_requests_total{outcome=\"rejected\"} 25"),
        "{metrics}"
    );
}
