//! A payment service written by a user, made rate-limited and idempotent by stacking the two
//! tollgate-http layers in front of it, served with hyper.
//!
//! ```text
//! cargo run --example embed_layers
//! ```
//!
//! It serves on an ephemeral port, sends itself three requests with one `Idempotency-Key` (the
//! second is a replay, the third a mismatch), and prints what came back.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tollgate_http::RequestHead;
use tollgate_http::content_type::require_json;
use tollgate_http::idempotency::{IdempotencyLayer, Identity, RequestBody};
use tollgate_http::ratelimit::{RateLimitLayer, Subject};
use tollgate_idempotency::memory::MemoryStore;
use tollgate_idempotency::{Idempotency, IdempotencyConfig};
use tollgate_ratelimit::{MemoryLimiter, PolicySet};
use tower::ServiceBuilder;

/// The user's own handler: knows nothing about limits or retries.
async fn create_payment(
    request: Request<RequestBody>,
    counter: Arc<AtomicU32>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Err(problem) = require_json(request.headers()) {
        let (parts, body) = problem.into_response().into_parts();
        return Ok(Response::from_parts(parts, Full::new(body)));
    }
    let n = counter.fetch_add(1, Ordering::SeqCst);
    let body = format!(r#"{{"transaction_id":"txn_{n}","status":"succeeded"}}"#);
    let response = Response::builder()
        .status(StatusCode::CREATED)
        .header("content-type", "application/json")
        .header("location", format!("/api/v1/payments/txn_{n}"))
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default();
    Ok(response)
}

/// Who is calling: a real service would take this from its auth layer.
fn user_of(request: &RequestHead<'_>) -> Option<String> {
    request
        .headers()
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let counter = Arc::new(AtomicU32::new(0));
    let driver = Arc::new(Idempotency::new(
        MemoryStore::new(100_000),
        IdempotencyConfig::default(),
    ));
    let service = ServiceBuilder::new()
        .layer(RateLimitLayer::new(
            Arc::new(MemoryLimiter::new()),
            PolicySet::defaults(),
            |req: &RequestHead<'_>| Subject {
                user: user_of(req),
                endpoint: Some(format!("{} /api/v1/payments", req.method())),
                ..Subject::default()
            },
        ))
        .layer(IdempotencyLayer::new(driver, |req: &RequestHead<'_>| {
            user_of(req).map(|user| Identity::new(user, "/api/v1/payments"))
        }))
        .service_fn(move |request| create_payment(request, Arc::clone(&counter)));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    for body in [
        r#"{"amount":"10.00"}"#,
        r#"{ "amount": "10.00" }"#,
        r#"{"amount":"99.00"}"#,
    ] {
        let request = Request::post(format!("http://{addr}/api/v1/payments"))
            .header("x-user", "alice")
            .header("content-type", "application/json")
            .header("idempotency-key", "order-7c1f0e9a2b4d4e11")
            .body(Full::new(Bytes::from(body)))?;
        let response = client.request(request).await?;
        let status = response.status();
        let replayed = response.headers().get("idempotent-replayed").cloned();
        let remaining = response.headers().get("x-ratelimit-remaining").cloned();
        let text = response.into_body().collect().await?.to_bytes();
        println!(
            "{body:<24} → {status} replayed={replayed:?} remaining={remaining:?} {}",
            String::from_utf8_lossy(&text)
        );
    }
    Ok(())
}
