//! `/health`, `/ready`, `/metrics` and the public retry policy.

use crate::support::{Api, on_every_backend};

on_every_backend!(crate::CONFIG; health_reports_each_backend, ready_when_every_backend_answers,
    retry_config_is_public_and_rate_limited, metrics_are_prometheus_text);

async fn health_reports_each_backend(api: &Api) {
    let health = api.get("/health", None).await;
    health.expect(200);
    let json = health.json();
    assert_eq!(json["status"], "ok");
    let expected = if api.services.is_some() {
        "up"
    } else {
        "disabled"
    };
    for service in ["redis", "database"] {
        assert_eq!(json["services"][service]["status"], expected, "{json}");
    }
    assert_eq!(json["ready"], true, "{json}");
    if api.services.is_some() {
        // With PostgreSQL, the default local-fallback limiter can serve without Redis.
        assert_eq!(json["services"]["redis"]["required"], false, "{json}");
        assert_eq!(json["services"]["database"]["required"], true, "{json}");
    }
    assert!(
        health.header("x-ratelimit-limit").is_none(),
        "probes are never rate limited"
    );
}

async fn ready_when_every_backend_answers(api: &Api) {
    let ready = api.get("/ready", None).await;
    ready.expect(200);
    assert_eq!(ready.json()["ready"], true);
}

async fn retry_config_is_public_and_rate_limited(api: &Api) {
    let retry = api.get("/api/v1/retry-config", None).await;
    retry.expect(200);
    assert_eq!(retry.json()["max_attempts"], 3);
    assert_eq!(retry.json()["jitter"], "full");
    assert!(retry.header("x-ratelimit-limit").is_some(), "{retry:?}");
}

async fn metrics_are_prometheus_text(api: &Api) {
    api.get("/health", None).await.expect(200);
    let metrics = api.get("/metrics", None).await;
    metrics.expect(200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain"))
    );
    for line in [
        "payment_success_rate",
        "payment_processor_circuit_state 0",
        "http_request_duration_seconds_bucket{method=\"GET\",route=\"/health\",status=\"200\"",
        "rate_limiter_degraded_decisions_total",
    ] {
        assert!(metrics.body.contains(line), "{line} in\n{}", metrics.body);
    }
}

/// A fresh server's first scrape already holds every series whose labels are known at start —
/// each policy's refusals and decisions, each payment and idempotency outcome — at zero, so
/// dashboards read 0 and `rate()` alerts see the first increase.
#[tokio::test]
async fn the_first_scrape_has_every_known_series_at_zero() {
    let api = crate::support::Api::memory(crate::CONFIG);
    let metrics = api.get("/metrics", None).await.body;
    for series in [
        "rate_limit_exceeded_total{policy=\"payments\"} 0",
        "rate_limit_exceeded_total{policy=\"anonymous\"} 0",
        "rate_limit_decisions_total{policy=\"burst\",result=\"denied\"} 0",
        "payment_requests_total{outcome=\"succeeded\"} 0",
        "payment_requests_total{outcome=\"rate_limited\"} 0",
        "idempotency_requests_total{outcome=\"replayed\"} 0",
        "config_reloads_total{result=\"failure\"} 0",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
}
