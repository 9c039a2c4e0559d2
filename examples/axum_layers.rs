//! The rate-limit and idempotency layers on an axum `Router`: the limit keyed on the client
//! address (`ConnectInfo`) and the route template (`MatchedPath`), idempotency scoped to the
//! caller and the template, and a middleware outside both that reads what they decided from
//! typed response extensions — no header parsing.
//!
//! ```text
//! cargo run --example axum_layers
//! ```
//!
//! It serves on an ephemeral port, sends itself four requests for two orders (a payment, its
//! replay, a reuse of the key with another body, and one request too many), and prints what
//! came back and what the outer middleware saw.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tollgate_http::RequestHead;
use tollgate_http::idempotency::{IdempotencyLayer, IdempotencyOutcome, Identity};
use tollgate_http::ratelimit::{RateLimitLayer, RateLimited, Subject};
use tollgate_idempotency::memory::MemoryStore;
use tollgate_idempotency::{Idempotency, IdempotencyConfig};
use tollgate_ratelimit::{Algorithm, MemoryLimiter, Policy, PolicySet, Scope};

const PAY: &str = "/orders/{order}/pay";

/// The user's own handler: knows nothing about limits or retries.
async fn pay(State(charges): State<Arc<AtomicU32>>, Path(order): Path<String>) -> Response {
    let n = charges.fetch_add(1, Ordering::SeqCst);
    let location = format!("/payments/txn_{n}");
    let body = format!(r#"{{"transaction_id":"txn_{n}","order":"{order}"}}"#);
    let headers = [
        (header::CONTENT_TYPE, "application/json".to_owned()),
        (header::LOCATION, location),
    ];
    (StatusCode::CREATED, headers, body).into_response()
}

/// Outside both layers: counts what they decided, from the typed facts they publish.
async fn observe(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let seen = match (
        response.extensions().get::<RateLimited>(),
        response.extensions().get::<IdempotencyOutcome>(),
    ) {
        (Some(limited), _) => format!("refused by `{}`", limited.policy),
        (None, Some(outcome)) => format!("{outcome:?}"),
        (None, None) => "not made idempotent".to_owned(),
    };
    println!("  observed: {seen}");
    response
}

/// `METHOD /route/template`, from the router.
fn endpoint(head: &RequestHead<'_>) -> Option<String> {
    let path = head.extensions().get::<MatchedPath>()?;
    Some(format!("{} {}", head.method(), path.as_str()))
}

fn app() -> Result<Router, Box<dyn std::error::Error>> {
    let per_client = Policy::new(
        "per-client",
        Scope::Ip,
        Algorithm::sliding_window(3, Duration::from_secs(60)),
    )?
    .for_endpoint(&format!("POST {PAY}"));
    let limits = RateLimitLayer::new(
        Arc::new(MemoryLimiter::new()),
        PolicySet::new([per_client])?,
        |head: &RequestHead<'_>| Subject {
            ip: head
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
            endpoint: endpoint(head),
            ..Subject::default()
        },
    );
    let driver = Arc::new(Idempotency::new(
        MemoryStore::new(100_000),
        IdempotencyConfig::default(),
    ));
    let idempotency = IdempotencyLayer::new(driver, |head: &RequestHead<'_>| {
        // A real service takes the user from its auth layer's extension.
        let user = head.headers().get("x-user")?.to_str().ok()?;
        let route = head.extensions().get::<MatchedPath>()?;
        Some(Identity::new(user, route.as_str()))
    });
    Ok(Router::new()
        .route(PAY, post(pay))
        // The last layer added runs first: limits, then idempotency, then the handler.
        .route_layer(idempotency)
        .route_layer(limits)
        .layer(middleware::from_fn(observe))
        .with_state(Arc::new(AtomicU32::new(0))))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let service = app()?.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let sends = [
        ("ord_1", "order-7c1f0e9a2b4d4e11", r#"{"amount":"10.00"}"#),
        (
            "ord_1",
            "order-7c1f0e9a2b4d4e11",
            r#"{ "amount": "10.00" }"#,
        ),
        ("ord_1", "order-7c1f0e9a2b4d4e11", r#"{"amount":"99.00"}"#),
        ("ord_2", "order-2b4d4e117c1f0e9a", r#"{"amount":"5.00"}"#),
    ];
    for (order, key, body) in sends {
        let request = http::Request::post(format!("http://{addr}/orders/{order}/pay"))
            .header("x-user", "alice")
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Full::new(Bytes::from(body)))?;
        let response = client.request(request).await?;
        let status = response.status();
        let replayed = response.headers().get("idempotent-replayed").cloned();
        let text = response.into_body().collect().await?.to_bytes();
        println!(
            "{order} {body:<24} → {status} replayed={replayed:?} {}",
            String::from_utf8_lossy(&text)
        );
    }
    Ok(())
}
