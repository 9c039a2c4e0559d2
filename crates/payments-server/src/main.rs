//! The bundled Tollgate payments server.
//!
//! Today it starts, serves `GET /health`, and answers every other route of the contract in
//! `DESIGN.md` with `501 Not Implemented` (RFC 9457 problem+json) naming the issue that brings
//! it. The server is composition only: rate limiting, idempotency, retry policy and audit live in
//! the library crates.
//!
//! Configuration: `BIND_ADDR` (default `127.0.0.1:8000`), `LOG_LEVEL` (default `info`).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Routes of the contract that later issues implement, and the issue that brings each.
const PLANNED: &[(&str, &str)] = &[
    ("/api/v1/payments", "#5"),
    ("/api/v1/retry-config", "#5"),
    ("/api/v1/rate-limits", "#5"),
    ("/api/v1/audit-logs", "#5"),
    ("/api/v1/simulate-concurrent", "#5"),
    ("/ready", "#5"),
    ("/metrics", "#5"),
];

fn json(
    status: StatusCode,
    content_type: &'static str,
    body: serde_json::Value,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn problem(status: StatusCode, title: &str, detail: String) -> Response<Full<Bytes>> {
    json(
        status,
        "application/problem+json",
        serde_json::json!({
            "type": "about:blank",
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
        }),
    )
}

fn route(request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if path == "/health" {
        if request.method() != Method::GET {
            let mut response = problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method Not Allowed",
                format!("{path} accepts GET"),
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET"));
            return response;
        }
        // No backend is wired yet: the memory defaults need none.
        return json(
            StatusCode::OK,
            "application/json",
            serde_json::json!({
                "status": "ok",
                "services": {
                    "redis": { "status": "disabled", "latency_ms": null },
                    "database": { "status": "disabled", "latency_ms": null },
                },
            }),
        );
    }
    let planned = PLANNED
        .iter()
        .find(|(prefix, _)| path == *prefix || path.starts_with(&format!("{prefix}/")));
    match planned {
        Some((_, issue)) => problem(
            StatusCode::NOT_IMPLEMENTED,
            "Not Implemented",
            format!("{path} is part of the Tollgate HTTP contract and arrives with issue {issue}"),
        ),
        None => problem(
            StatusCode::NOT_FOUND,
            "Not Found",
            format!("no route for {path}"),
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let filter = std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter)?)
        .init();
    let addr: SocketAddr = std::env::var("BIND_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:8000".to_owned())
        .parse()
        .map_err(|e| format!("BIND_ADDR: {e}"))?;
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "payments-server listening; only GET /health is implemented so far, the rest of the API answers 501");
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("shutting down");
                return Ok(());
            }
        };
        tokio::spawn(async move {
            let service = service_fn(|request| async move { Ok::<_, Infallible>(route(&request)) });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}
