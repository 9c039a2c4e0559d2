//! `/health`, `/ready`, `/metrics` and the public retry policy.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::CONTENT_TYPE;
use serde_json::json;
use tollgate_http::problem::Problem;
use tollgate_retry::config::RetryConfig;

use crate::health::Report;
use crate::responses;
use crate::state::AppState;

/// The backends' state, probed at most once per `health.cache`. Boxed: the probes' futures
/// are large (~14 KB), and every request's future would otherwise carry that size through each
/// move (measured: half of the server's instructions were `memcpy` of futures before this).
fn check(state: &AppState) -> Pin<Box<dyn Future<Output = Report> + Send + '_>> {
    Box::pin(state.health.report(&state.services))
}

pub(crate) async fn health(State(state): State<Arc<AppState>>) -> Response {
    responses::json(StatusCode::OK, &check(&state).await.to_json())
}

pub(crate) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.is_draining() {
        let draining = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Not Ready")
            .detail("the server is shutting down; requests still in flight are served")
            .extension("ready", false)
            .extension("draining", true);
        return responses::with_retry_after(
            responses::respond(draining),
            std::time::Duration::from_secs(1),
        );
    }
    let report = check(&state).await;
    let services = report.services_json();
    if report.ready() {
        return responses::json(
            StatusCode::OK,
            &json!({ "ready": true, "services": services }),
        );
    }
    // An error like any other: problem+json, with the services that are down.
    let not_ready = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Not Ready")
        .detail("a configured backend is down; see `services`")
        .extension("ready", false)
        .extension("services", services);
    responses::with_retry_after(
        responses::respond(not_ready),
        std::time::Duration::from_secs(1),
    )
}

pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    // One read of the backends' counters serves both.
    let snapshot = state.services.snapshot();
    state.metrics.observe_limiter(snapshot.degraded());
    state.metrics.observe_backends(&snapshot);
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    ([(CONTENT_TYPE, content_type)], state.metrics.render()).into_response()
}

pub(crate) async fn retry_config() -> Response {
    responses::json(StatusCode::OK, &RetryConfig::default())
}
