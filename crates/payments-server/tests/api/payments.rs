//! `POST /api/v1/payments` and `GET /api/v1/payments/{transaction_id}`.

use std::time::Duration;

use crate::support::{ALICE, Api, BOB, on_every_backend, payment, unique};

on_every_backend!(crate::CONFIG; a_payment_and_its_replay, only_the_owner_reads_a_payment,
    refusals_before_anything_runs, a_decline_is_stored_and_replayed,
    a_lost_answer_is_reconciled_not_charged_again);

mod slow {
    use crate::support::{Api, on_every_backend};

    on_every_backend!(crate::SLOW_CONFIG; a_duplicate_in_flight_gets_409);

    async fn a_duplicate_in_flight_gets_409(api: &Api) {
        super::a_duplicate_in_flight_gets_409(api).await;
    }
}

async fn a_payment_and_its_replay(api: &Api) {
    let key = unique("order");
    let body = payment("99.99", "credit_card");
    let first = api.pay(ALICE, &key, &body).await;
    first.expect(201);
    assert_eq!(first.header("idempotent-replayed"), Some("false"));
    for header in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "ratelimit",
        "ratelimit-policy",
        "x-request-id",
    ] {
        assert!(first.header(header).is_some(), "{header} in {first:?}");
    }
    let paid = first.json();
    assert_eq!(paid["status"], "succeeded");
    assert_eq!(paid["amount"], "99.99");
    assert_eq!(paid["amount_minor"], 9999);
    assert_eq!(paid["currency"], "USD");
    assert_eq!(paid["metadata"]["order_id"], "ord_1");
    let txn = paid["transaction_id"].as_str().expect("an id");
    let location = first.header("location").expect("Location");
    assert_eq!(location, format!("/api/v1/payments/{txn}"));

    let again = api.pay(ALICE, &key, &body).await;
    again.expect(201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body, "the replay is byte for byte");
    assert_eq!(again.header("location"), Some(location));
    assert_ne!(again.header("x-request-id"), first.header("x-request-id"));
    api.pay(ALICE, &key, &payment("10.00", "credit_card"))
        .await
        .expect(422);
    // Another user's identical key is another payment.
    let bobs = api.pay(BOB, &key, &body).await;
    bobs.expect(201);
    assert_eq!(bobs.header("idempotent-replayed"), Some("false"));

    let metrics = api.get("/metrics", None).await.body;
    for line in [
        "payment_requests_total{outcome=\"succeeded\"} 2",
        "payment_requests_total{outcome=\"replayed\"} 1",
        "payment_requests_total{outcome=\"rejected\"} 1",
        "idempotent_replays_total 1",
        "payment_success_rate 100",
        "http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/v1/payments\",status=\"201\"",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    let rows = "SELECT count(*) FROM {schema}.payments p JOIN {schema}.idempotency_records r \
                ON r.user_id = p.user_id AND r.key = p.idempotency_key \
                WHERE r.state = 'completed' AND p.status = 'succeeded'";
    if let Some(rows) = api.count(rows).await {
        assert_eq!(rows, 2, "one row per execution, committed with its record");
    }
}

async fn only_the_owner_reads_a_payment(api: &Api) {
    let paid = api
        .pay(ALICE, &unique("order"), &payment("5.00", "card"))
        .await;
    let location = paid.header("location").expect("Location").to_owned();
    let read = api.get(&location, Some(ALICE)).await;
    read.expect(200);
    assert_eq!(read.json(), paid.json());
    api.get(&location, Some(BOB)).await.expect(404);
    api.get("/api/v1/payments/txn_unknown", Some(ALICE))
        .await
        .expect(404);
}

async fn refusals_before_anything_runs(api: &Api) {
    let body = payment("99.99", "credit_card");
    let auth = format!("Bearer {ALICE}");
    let json = ("Content-Type", "application/json");
    let without_key = [("Authorization", auth.as_str()), json];
    api.call("POST", "/api/v1/payments", &without_key, body.clone())
        .await
        .expect(400);
    api.pay(ALICE, "short", &body).await.expect(400);
    let key = unique("order");
    let text = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "text/plain"),
        ("Idempotency-Key", key.as_str()),
    ];
    api.call("POST", "/api/v1/payments", &text, body.clone())
        .await
        .expect(415);
    let malformed = api.pay(ALICE, &unique("order"), r#"{"amount": 1,"#).await;
    malformed.expect(400);
    let detail = malformed.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(detail.contains("line 1"), "{detail}");
    let invalid = api
        .pay(
            ALICE,
            &unique("order"),
            r#"{"amount": "1.001", "currency": "usd", "payment_method": "card", "metadata": {"n": 1}}"#,
        )
        .await;
    invalid.expect(422);
    let fields: Vec<_> = invalid.json()["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(fields, ["currency", "amount", "metadata.n"]);
    // A key refused for an invalid body is free again for the corrected request.
    let retried = api.pay(ALICE, &key, &body).await;
    retried.expect(201);
    if let Some(rows) = api.count("SELECT count(*) FROM {schema}.payments").await {
        assert_eq!(rows, 1, "refusals record nothing");
    }
}

async fn a_decline_is_stored_and_replayed(api: &Api) {
    let key = unique("order");
    let body = payment("5.00", "test_decline");
    let declined = api.pay(ALICE, &key, &body).await;
    declined.expect(402);
    assert_eq!(declined.json()["decline_code"], "card_declined");
    let txn = declined.json()["transaction_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let again = api.pay(ALICE, &key, &body).await;
    again.expect(402);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, declined.body);
    let read = api
        .get(&format!("/api/v1/payments/{txn}"), Some(ALICE))
        .await
        .json();
    assert_eq!(read["status"], "failed");
    assert_eq!(read["decline_code"], "card_declined");
    let metrics = api.get("/metrics", None).await.body;
    assert!(
        metrics.contains("payment_requests_total{outcome=\"declined\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("payment_success_rate 0"), "{metrics}");
}

async fn a_lost_answer_is_reconciled_not_charged_again(api: &Api) {
    let key = unique("order");
    let body = payment("7.50", "test_timeout_after_charge");
    let lost = api.pay(ALICE, &key, &body).await;
    lost.expect(502);
    let txn = lost.json()["transaction_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let path = format!("/api/v1/payments/{txn}");
    assert_eq!(
        api.get(&path, Some(ALICE)).await.json()["status"],
        "pending"
    );
    let resumed = api.pay(ALICE, &key, &body).await;
    resumed.expect(201);
    assert_eq!(
        resumed.json()["transaction_id"],
        txn.as_str(),
        "the same payment"
    );
    assert_eq!(
        api.get(&path, Some(ALICE)).await.json()["status"],
        "succeeded"
    );
    let metrics = api.get("/metrics", None).await.body;
    assert!(
        metrics.contains("payment_requests_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );
    // That it was charged once is the processor's count, in the process tests with
    // `mock-processor` (`processor::…exactly_once`, `faults::a_killed_server_…`).
}

pub(crate) async fn a_duplicate_in_flight_gets_409(api: &Api) {
    let key = unique("order");
    let body = payment("1.00", "credit_card");
    let (first, second) = tokio::join!(api.pay(ALICE, &key, &body), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.pay(ALICE, &key, &body).await
    });
    first.expect(201);
    second.expect(409);
    let wait: u64 = second
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert_eq!(
        wait, 1,
        "another wait's worth, not the rest of the owner's 60 s lease"
    );
    let metrics = api.get("/metrics", None).await.body;
    assert!(
        metrics.contains("concurrent_conflicts_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("payment_requests_total{outcome=\"conflicted\"} 1"),
        "{metrics}"
    );
}
