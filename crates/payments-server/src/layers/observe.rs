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
use tollgate_http::idempotency::StoreFailure;
use tollgate_http::ratelimit::RateLimitDecision;
use tracing::Span;

use super::auth::Authenticated;
use super::stage::{After, Around};
use crate::state::AppState;

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

/// The request's span (tower-http's `TraceLayer` enters it around the whole request).
pub(crate) fn span(request: &http::Request<Body>) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let method = method_label(request.method());
    let span = tracing::info_span!(
        "request",
        request_id = super::request_id::of(request.extensions()),
        method,
        route,
        user = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        // Only filled in when the spans are exported (feature `otlp`): OpenTelemetry's name,
        // kind and HTTP attributes for a server span.
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    if let Some(trace_id) = trace_id(request.headers()) {
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

/// W3C Trace Context's `traceparent`, named once: a lookup by a string parses the name each time,
/// and every request looks for it.
pub(crate) const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// The trace id of a valid W3C `traceparent` header (version `00`: `00-<32 hex trace id>-<16
/// hex parent id>-<2 hex flags>`, neither id all zeros), so the request's log lines can be
/// found from the caller's trace. Anything else is ignored, as the Trace Context
/// recommendation asks.
pub(crate) fn trace_id(headers: &http::HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |text: &str, len: usize| {
        text.len() == len
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    valid.then_some(trace)
}

/// The `traceparent` for a call this request makes: the caller's trace id and flags, with a
/// new parent id (this server's span of the call), if the caller sent a valid one. When spans
/// are exported, the request's own span is the parent, in the caller's trace or a new one.
pub(crate) fn child_traceparent(headers: &http::HeaderMap) -> Option<String> {
    #[cfg(feature = "otlp")]
    if crate::telemetry::exporting() {
        return crate::telemetry::current_traceparent();
    }
    let trace = trace_id(headers)?;
    let value = headers.get(TRACEPARENT)?.to_str().ok()?.trim();
    let flags = value.get(value.len() - 2..)?;
    Some(format!("00-{trace}-{:016x}-{flags}", fastrand::u64(1..)))
}

/// Times the request into `http_request_duration_seconds`, writes its log line (in its span;
/// for a request no key vouched for, a debug line and a count in the [strangers'
/// log](crate::access_log), so strangers cannot grow the log),
/// and logs what an idempotency store failure was (clients get a fixed message).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Measure;

impl Around for Measure {
    /// When the request arrived, its route template and its method label.
    type Noted = (Instant, Option<MatchedPath>, &'static str);

    fn before(&self, _state: &AppState, request: &Request) -> Self::Noted {
        let route = request.extensions().get::<MatchedPath>().cloned();
        (Instant::now(), route, method_label(request.method()))
    }

    fn after(&self, state: &Arc<AppState>, noted: Self::Noted, response: Response) -> After {
        let (started, route, method) = noted;
        if let Some(failure) = response.extensions().get::<StoreFailure>() {
            tracing::warn!(error = %failure.0, "idempotency store failed");
        }
        if let Some(RateLimitDecision {
            policy: Some(policy),
            allowed,
        }) = response.extensions().get::<RateLimitDecision>()
        {
            let result = if *allowed { "allowed" } else { "denied" };
            state
                .metrics
                .backends
                .rate_limit_decisions
                .with_label_values(&[policy.name(), result])
                .inc();
        }
        let route_path = route;
        let route = route_path.as_ref().map_or("unmatched", MatchedPath::as_str);
        let latency = started.elapsed();
        state
            .metrics
            .request_duration
            .with_label_values(&[route, method, response.status().as_str()])
            .observe(latency.as_secs_f64());
        let status = response.status().as_u16();
        #[cfg(feature = "otlp")]
        if crate::telemetry::exporting() {
            Span::current().record("http.response.status_code", status);
        }
        let latency_ms = latency.as_secs_f64() * 1e3;
        if response.extensions().get::<Authenticated>().is_some() {
            tracing::info!(status, latency_ms, "request");
        } else {
            tracing::debug!(status, latency_ms, "request");
            if let Some(summary) = state
                .stranger_log
                .count(method, route_path.as_ref(), status)
            {
                summary.log();
            }
        }
        After::Now(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(value: &str) -> Option<String> {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", value.parse().expect("a value"));
        trace_id(&headers).map(str::to_owned)
    }

    #[test]
    fn only_valid_traceparents_are_read() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            trace(&format!("00-{id}-00f067aa0ba902b7-01")).as_deref(),
            Some(id)
        );
        for bad in [
            format!("01-{id}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{id}-0000000000000000-01"),
            format!("00-{}-00f067aa0ba902b7-01", id.to_uppercase()),
            format!("00-{id}-00f067aa0ba902b7"),
            format!("00-{id}-00f067aa0ba902b7-01-extra"),
            "garbage".to_owned(),
        ] {
            assert_eq!(trace(&bad), None, "{bad}");
        }
    }

    #[test]
    fn a_call_continues_the_callers_trace_with_a_new_parent() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            format!("00-{id}-00f067aa0ba902b7-01")
                .parse()
                .expect("a value"),
        );
        let child = child_traceparent(&headers).expect("a traceparent");
        let mut parts = child.split('-');
        assert_eq!(parts.next(), Some("00"));
        assert_eq!(parts.next(), Some(id), "the same trace");
        let parent = parts.next().expect("a parent id");
        assert_eq!(parent.len(), 16);
        assert_ne!(parent, "00f067aa0ba902b7", "a new parent id");
        assert_eq!(parts.next(), Some("01"), "the same flags");
        assert_eq!(child_traceparent(&http::HeaderMap::new()), None);
    }
}
