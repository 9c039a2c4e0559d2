//! An axum service that embeds the limiter and the idempotency driver and watches them: logs
//! through `tracing-subscriber` (the libraries' `tracing` feature) and Prometheus metrics through
//! `metrics-exporter-prometheus` (their `metrics` feature), served at `/metrics`.
//!
//! ```text
//! cargo run --example axum_telemetry --features telemetry,idempotency,http
//! RUST_LOG=debug cargo run --example axum_telemetry --features telemetry,idempotency,http
//! ```
//!
//! It pays three orders with a limit of two a minute, so the third is refused; the log line
//! of the refusal names the policy and the key, and `/metrics` shows the decisions per policy
//! and result, the idempotency outcomes and the backends' latency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath};
use axum::http::StatusCode;
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::PrometheusBuilder;
use tollgate_http::RequestHead;
use tollgate_http::idempotency::{IdempotencyLayer, Identity};
use tollgate_http::ratelimit::{RateLimitLayer, Subject};
use tollgate_idempotency::memory::MemoryStore;
use tollgate_idempotency::{Idempotency, IdempotencyConfig};
use tollgate_ratelimit::{Algorithm, MemoryLimiter, Policy, PolicySet, Scope};
use tracing_subscriber::EnvFilter;

const PAY: &str = "/orders/{order}/pay";

fn app(
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> Result<Router, Box<dyn std::error::Error>> {
    let two_a_minute = Policy::new(
        "payments",
        Scope::Ip,
        Algorithm::sliding_window(2, Duration::from_secs(60)),
    )?;
    let limits = RateLimitLayer::new(
        Arc::new(MemoryLimiter::new()),
        PolicySet::new([two_a_minute])?,
        |head: &RequestHead<'_>| Subject {
            ip: head
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
            ..Subject::default()
        },
    );
    let driver = Arc::new(Idempotency::new(
        MemoryStore::new(10_000),
        IdempotencyConfig::default(),
    ));
    let idempotency = IdempotencyLayer::new(driver, |head: &RequestHead<'_>| {
        let route = head.extensions().get::<MatchedPath>()?;
        Some(Identity::new("alice", route.as_str()))
    });
    Ok(Router::new()
        .route(PAY, post(|| async { (StatusCode::CREATED, "paid") }))
        .route_layer(idempotency)
        .route_layer(limits)
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The refusal's reason is a DEBUG event of tollgate_ratelimit: show the libraries' DEBUG
    // lines, everything else from INFO (RUST_LOG overrides).
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,tollgate_ratelimit=debug,tollgate_idempotency=debug")
    });
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let metrics = PrometheusBuilder::new().install_recorder()?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let service = app(metrics)?.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    for (order, key) in [
        ("ord_1", "order-7c1f0e9a2b4d4e11"),
        ("ord_2", "order-2b4d4e117c1f0e9a"),
        ("ord_3", "order-4e117c1f0e9a2b4d"),
    ] {
        let request = http::Request::post(format!("http://{addr}/orders/{order}/pay"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Full::new(Bytes::from_static(b"{\"amount\":\"10.00\"}")))?;
        let status = client.request(request).await?.status();
        println!("{order} → {status}");
    }

    let scrape =
        http::Request::get(format!("http://{addr}/metrics")).body(Full::new(Bytes::new()))?;
    let text = client
        .request(scrape)
        .await?
        .into_body()
        .collect()
        .await?
        .to_bytes();
    let text = String::from_utf8_lossy(&text);
    println!("\n/metrics (the libraries' series):");
    for line in text
        .lines()
        .filter(|l| l.starts_with("tollgate_") && !l.contains("quantile"))
    {
        println!("  {line}");
    }
    Ok(())
}
