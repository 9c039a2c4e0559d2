//! What every request leaves behind: a span carrying its id, method, route template and user
//! (so every log line written inside it says which request it belongs to), a log line when it
//! is answered, and its duration in `/metrics`. Label values are bounded: route templates,
//! standard methods or `other`, status codes.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use http::Method;
use prometheus::{HistogramVec, IntCounterVec};
use tollgate_http::idempotency::StoreFailure;
use tollgate_http::ratelimit::RateLimitDecision;
use tracing::Span;

use super::auth::Authenticated;
use super::rate_limits::ClientAddresses;
use super::stage::{After, Around};
use crate::access_log::StrangerLog;

/// A method as a label: the standard ones by name, any other as `other` (a client chooses the
/// method, and must not choose the number of series or the size of a log line).
pub(crate) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// OpenTelemetry's `http.request.method`: the standard methods by name, any other as
/// `_OTHER`, as the HTTP semantic conventions ask.
fn semconv_method(method: &Method) -> &'static str {
    match method_label(method) {
        "other" => "_OTHER",
        known => known,
    }
}

/// The request's span (tower-http's `TraceLayer` enters it around the whole request), with
/// OpenTelemetry's HTTP server attributes; JSON log lines carry the same names.
pub(crate) fn span(addresses: &ClientAddresses, request: &http::Request<Body>) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let method = semconv_method(request.method());
    let client = addresses.of(request.headers(), request.extensions());
    let span = tracing::info_span!(
        "request",
        request_id = super::request_id::of(request.extensions()),
        http.request.method = method,
        http.route = route,
        url.path = request.uri().path(),
        client.address = client.map(tracing::field::display),
        user.id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        // Only filled in when the spans are exported (feature `otlp`): OpenTelemetry's name
        // and kind for a server span.
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    if let Some(trace_id) = crate::trace::trace_id(request.headers()) {
        span.record("trace_id", trace_id);
    }
    #[cfg(feature = "otlp")]
    if crate::telemetry::exporting() {
        span.record("otel.name", format!("{method} {route}"));
        span.record("otel.kind", "server");
        crate::telemetry::adopt_caller_trace(&span, request.headers());
    }
    span
}

/// Times the request into `http_request_duration_seconds`, writes its log line (in its span;
/// for a request no key vouched for or a refusal (4xx), a debug line and a count in the
/// [counted log](crate::access_log), so neither strangers nor a refused caller can grow the
/// log),
/// and logs what an idempotency store failure was (clients get a fixed message).
#[derive(Debug)]
pub(crate) struct Measure {
    /// `http_request_duration_seconds`.
    pub(crate) request_duration: HistogramVec,
    /// `rate_limit_decisions_total`.
    pub(crate) rate_limit_decisions: IntCounterVec,
    pub(crate) stranger_log: Arc<StrangerLog>,
}

impl Around for Measure {
    /// When the request arrived, its route template and its method label.
    type Noted = (Instant, Option<MatchedPath>, &'static str);

    fn before(&self, request: &Request) -> Self::Noted {
        let route = request.extensions().get::<MatchedPath>().cloned();
        (Instant::now(), route, method_label(request.method()))
    }

    fn after(&self, noted: Self::Noted, response: Response) -> After {
        let (started, route, method) = noted;
        if let Some(failure) = response.extensions().get::<StoreFailure>() {
            let error = crate::pools::explained(failure.0.clone());
            tracing::warn!(%error, "idempotency store failed");
        }
        if let Some(decision) = response.extensions().get::<RateLimitDecision>() {
            count_rate_limit_decision(&self.rate_limit_decisions, decision);
        }
        let route_path = route;
        let route = route_path.as_ref().map_or("unmatched", MatchedPath::as_str);
        let latency = started.elapsed();
        self.request_duration
            .with_label_values(&[route, method, response.status().as_str()])
            .observe(latency.as_secs_f64());
        let status = response.status().as_u16();
        let span = Span::current();
        span.record("http.response.status_code", status);
        if status >= 500 {
            // OpenTelemetry's error.type for a server error without an exception: the status.
            span.record("error.type", response.status().as_str());
        }
        // Microseconds are all a log reader uses: 17.942 ms, not 17.942442999999997.
        let latency_ms = (latency.as_secs_f64() * 1e6).round() / 1e3;
        // A line each for a caller's answered request and for any server error; a count for
        // everything a stranger or a refusal can repeat at will.
        let a_callers = response.extensions().get::<Authenticated>().is_some() && status < 400;
        if a_callers || status >= 500 {
            tracing::info!(http.response.status_code = status, latency_ms, "request");
        } else {
            tracing::debug!(http.response.status_code = status, latency_ms, "request");
            if let Some(summary) = self.stranger_log.count(method, route_path.as_ref(), status) {
                summary.log();
            }
        }
        After::Now(response)
    }
}

/// Counts `decision` under its binding policy (`allowed`, `denied`) and each shadow policy that
/// would have refused (`would-deny`).
fn count_rate_limit_decision(decisions: &IntCounterVec, decision: &RateLimitDecision) {
    if let Some(policy) = &decision.policy {
        let result = if decision.allowed {
            "allowed"
        } else {
            "denied"
        };
        decisions.with_label_values(&[policy.name(), result]).inc();
    }
    for policy in &decision.would_deny {
        decisions
            .with_label_values(&[policy.name(), "would-deny"])
            .inc();
    }
}
