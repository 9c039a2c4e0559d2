//! A client that pays through the Tollgate server the way the server asks clients to retry:
//! it fetches the published policy from `GET /api/v1/retry-config`, then sends
//! `POST /api/v1/payments` with one `Idempotency-Key` reused on every attempt, backing off with
//! full jitter on 5xx and obeying `Retry-After` on 429 (and on 409 while the key is in progress),
//! with a shared AWS-style retry budget.
//!
//! ```text
//! cargo run -p payments-server &            # the server (memory backends)
//! cargo run --example pay_with_retries --features retry
//! ```
//!
//! `TOLLGATE_URL` (default `http://127.0.0.1:8000`) and `API_KEY` (default `test-api-key`, the
//! development key) configure it.

use std::error::Error;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tollgate::retry::budget::RetryBudget;
use tollgate::retry::config::RetryConfig;
use tollgate::retry::layer::RetryLayer;
use tollgate::retry::retry::Retrier;
use tower::{Layer, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let base = std::env::var("TOLLGATE_URL").unwrap_or_else(|_| "http://127.0.0.1:8000".to_owned());
    let api_key = std::env::var("API_KEY").unwrap_or_else(|_| "test-api-key".to_owned());
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();

    // 1. Obey the server's published policy (fall back to the same defaults if it has none yet).
    let config_request =
        Request::get(format!("{base}/api/v1/retry-config")).body(Full::default())?;
    let config = match client.request(config_request).await {
        Ok(response) if response.status() == StatusCode::OK => {
            let body = response.into_body().collect().await?.to_bytes();
            serde_json::from_slice::<RetryConfig>(&body)?
        }
        Ok(response) => {
            println!(
                "retry-config answered {}; using the default policy",
                response.status()
            );
            RetryConfig::default()
        }
        Err(error) => return Err(format!("cannot reach {base}: {error}").into()),
    };
    let policy = config.to_policy()?.budget(RetryBudget::aws_standard());
    let service = RetryLayer::http(Retrier::new(policy)).layer(client);

    // 2. One key for this payment, whatever happens to the attempts.
    let idempotency_key = uuid::Uuid::now_v7().to_string();
    let body = serde_json::json!({
        "amount": "99.99",
        "currency": "USD",
        "description": "Premium subscription",
        "payment_method": "credit_card",
        "metadata": { "customer_id": "cust_123", "order_id": "ord_456" },
    });
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{base}/api/v1/payments"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {api_key}"))
        .header("idempotency-key", &idempotency_key)
        .body(Full::new(Bytes::from(body.to_string())))?;

    let started = std::time::Instant::now();
    let response =
        tokio::time::timeout(Duration::from_secs(120), service.oneshot(request)).await??;
    let status = response.status();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let text = response.into_body().collect().await?.to_bytes();
    println!(
        "POST /api/v1/payments (Idempotency-Key {idempotency_key}) → {status} after {:?}, Idempotent-Replayed: {replayed}",
        started.elapsed()
    );
    println!("{}", String::from_utf8_lossy(&text));
    Ok(())
}
