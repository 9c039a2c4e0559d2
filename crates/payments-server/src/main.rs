//! The bundled Tollgate payments server.
//!
//! Today it starts, authenticates Bearer keys (`API_KEYS` / `API_KEY`, or the development key
//! `test-api-key` with a warning), serves `GET /health` and `GET /api/v1/retry-config`, and
//! answers every other route of the contract in `DESIGN.md` with `401` (no valid key) or
//! `501 Not Implemented` naming the issue that brings it, as RFC 9457 problem+json. The server is
//! composition only: rate limiting, idempotency, retry policy and audit live in the library
//! crates.
//!
//! Configuration: `BIND_ADDR` (default `127.0.0.1:8000`), `LOG_LEVEL` (default `info`),
//! `API_KEYS`, `API_KEY`; `--help` lists the flags that mirror them.

mod auth;
mod config;

use std::convert::Infallible;
use std::sync::Arc;

use clap::Parser;

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
    ("/api/v1/rate-limits", "#5"),
    ("/api/v1/audit-logs", "#5"),
    ("/api/v1/simulate-concurrent", "#5"),
    ("/ready", "#5"),
    ("/metrics", "#5"),
];

/// What every request handler shares.
#[derive(Debug)]
struct App {
    keys: Vec<config::ApiKey>,
}

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

fn method_not_allowed(path: &str) -> Response<Full<Bytes>> {
    let mut response = problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed",
        format!("{path} accepts GET"),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static("GET"));
    response
}

fn route(app: &App, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let public_get = |body: serde_json::Value| {
        if request.method() == Method::GET {
            json(StatusCode::OK, "application/json", body)
        } else {
            method_not_allowed(path)
        }
    };
    match path {
        // No backend is wired yet: the memory defaults need none.
        "/health" => {
            return public_get(serde_json::json!({
                "status": "ok",
                "services": {
                    "redis": { "status": "disabled", "latency_ms": null },
                    "database": { "status": "disabled", "latency_ms": null },
                },
            }))
        }
        "/api/v1/retry-config" => {
            let config = tollgate_retry::config::RetryConfig::default();
            return public_get(serde_json::to_value(config).unwrap_or_default());
        }
        _ => {}
    }
    let planned = PLANNED
        .iter()
        .find(|(prefix, _)| path == *prefix || path.starts_with(&format!("{prefix}/")));
    let Some((_, issue)) = planned else {
        return problem(
            StatusCode::NOT_FOUND,
            "Not Found",
            format!("no route for {path}"),
        );
    };
    // /ready and /metrics are public in the contract; everything else under /api needs a key.
    let public = matches!(path, "/ready" | "/metrics");
    if !public && auth::authenticate(request.headers(), &app.keys).is_none() {
        let mut response = problem(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "send `Authorization: Bearer <API key>`".to_owned(),
        );
        response.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tollgate\""),
        );
        return response;
    }
    problem(
        StatusCode::NOT_IMPLEMENTED,
        "Not Implemented",
        format!("{path} is part of the Tollgate HTTP contract and arrives with issue {issue}"),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = config::Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log_level)
                .map_err(|e| format!("LOG_LEVEL: {e}"))?,
        )
        .init();
    let (keys, development) = config
        .keys()
        .map_err(|e| format!("invalid configuration: {e}"))?;
    if development {
        tracing::warn!(
            "no API_KEYS or API_KEY set: development mode, accepting the key `{}` as user `test`",
            config::DEV_KEY
        );
    }
    let app = Arc::new(App { keys });
    let listener = TcpListener::bind(config.bind_addr).await?;
    tracing::info!(addr = %config.bind_addr, "payments-server listening; GET /health and GET /api/v1/retry-config are implemented, the rest of the API answers 501 (issue #5)");
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("shutting down");
                return Ok(());
            }
        };
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let app = Arc::clone(&app);
                async move { Ok::<_, Infallible>(route(&app, &request)) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}
