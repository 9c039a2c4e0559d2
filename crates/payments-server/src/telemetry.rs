//! OpenTelemetry traces over OTLP/HTTP (feature `otlp`): each request's span, a child of the
//! caller's W3C trace, exported in batches to the collector the standard `OTEL_*` variables
//! name. Off unless an endpoint is set (or `OTEL_TRACES_EXPORTER=otlp`).
//!
//! The exporter reads `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`, `…_HEADERS`, `…_PROTOCOL`
//! (`http/protobuf`, the default, or `http/json`) and `…_COMPRESSION`; the SDK reads
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]` and
//! `OTEL_BSP_*`. This module adds `OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE` (the CAs an https
//! collector's certificate must be signed by) and `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT` (ms) to
//! its HTTP client, which is the server's own hyper client, run on the server's runtime.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Whether spans are exported (set once, at start-up).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports its spans.
pub(crate) fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The tracer provider when the `OTEL_*` variables ask for an exporter, or `None`; a variable
/// the server cannot follow is an error naming it.
pub(crate) fn provider() -> Result<Option<SdkTracerProvider>, String> {
    if !wanted()? {
        return Ok(None);
    }
    let protocol = protocol()?;
    let client = Client::new()?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_http_client(client)
        .build()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_*: {e}"))?;
    let mut resource = Resource::builder();
    if !names_service() {
        resource = resource.with_service_name("payments-server");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    EXPORTING.store(true, Ordering::Relaxed);
    Ok(Some(provider))
}

/// The layer that turns this process's spans into OpenTelemetry spans.
pub(crate) fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("payments-server"))
}

/// Flushes the spans not yet exported and stops the exporter.
pub(crate) async fn shutdown(provider: SdkTracerProvider) {
    // The batch processor's thread exports through this runtime: wait for it off the
    // runtime's own threads.
    let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    match stopped {
        Ok(Ok(())) => tracing::info!("traces flushed"),
        Ok(Err(error)) => tracing::warn!(%error, "traces not fully flushed"),
        Err(error) => tracing::warn!(%error, "traces not fully flushed"),
    }
}

/// Makes `span` a child of the caller's trace, if the request carries a valid `traceparent`.
pub(crate) fn adopt_caller_trace(span: &Span, headers: &http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        // Fails only without the OpenTelemetry layer, which `exporting` rules out.
        let _ = span.set_parent(parent);
    }
}

/// The `traceparent` of the current span, for a call it makes: its trace, with the span as
/// the parent.
pub(crate) fn current_traceparent() -> Option<String> {
    let context = Span::current().context();
    let span = context.span();
    let span = span.span_context();
    span.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span.trace_id(),
            span.span_id(),
            span.trace_flags().to_u8()
        )
    })
}

/// Whether the variables ask for an OTLP exporter: `OTEL_TRACES_EXPORTER=otlp`, or an OTLP
/// endpoint without `OTEL_TRACES_EXPORTER`; never with `OTEL_SDK_DISABLED=true`.
fn wanted() -> Result<bool, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(false);
    }
    match var("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
        Some("otlp") => Ok(true),
        Some("none") => Ok(false),
        Some(other) => Err(format!(
            "OTEL_TRACES_EXPORTER={other:?}: this server exports `otlp` (over HTTP) or `none`"
        )),
        None => Ok(var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()),
    }
}

/// `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`: `http/protobuf` (the default, as the specification
/// says; the exporter crate would pick JSON with both encodings built in) or `http/json`.
fn protocol() -> Result<opentelemetry_otlp::Protocol, String> {
    let Some((name, value)) = setting(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ) else {
        return Ok(opentelemetry_otlp::Protocol::HttpBinary);
    };
    match value.trim() {
        "http/protobuf" => Ok(opentelemetry_otlp::Protocol::HttpBinary),
        "http/json" => Ok(opentelemetry_otlp::Protocol::HttpJson),
        // The exporter would fall back to http/protobuf, most likely on the wrong port.
        other => Err(format!(
            "{name}={other:?}: this server exports over HTTP: `http/protobuf` (the default, \
             usually port 4318) or `http/json`"
        )),
    }
}

/// Whether the environment names the service (else the server names itself).
fn names_service() -> bool {
    std::env::var_os("OTEL_SERVICE_NAME").is_some_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| {
            v.split(',')
                .any(|kv| kv.trim().starts_with("service.name="))
        })
}

/// The signal's own variable, else the general one: the name of the one set, and its value.
fn setting(signal: &'static str, all: &'static str) -> Option<(&'static str, String)> {
    [signal, all].into_iter().find_map(|name| {
        let value = std::env::var(name).ok().filter(|v| !v.is_empty())?;
        Some((name, value))
    })
}

/// The collector's answers are read up to this (a partial-success message at most).
const ANSWER_LIMIT: usize = 64 * 1024;

/// The exporter's HTTP client: the server's hyper client, run on the server's runtime (the
/// SDK's batch processor calls it from a thread of its own).
#[derive(Debug)]
struct Client {
    runtime: tokio::runtime::Handle,
    client: hyper_util::client::legacy::Client<crate::tls::HttpsConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Client {
    fn new() -> Result<Client, String> {
        let roots = match setting(
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        ) {
            Some((name, path)) => crate::tls::roots_in_file(std::path::Path::new(&path))
                .map_err(|e| format!("{name} {e}"))?,
            // A plain-http collector needs no CA: a container without certificates still
            // starts, and an https one fails at its first export, in the log.
            None => crate::tls::roots(None).unwrap_or_else(|_| rustls::RootCertStore::empty()),
        };
        let timeout = match setting(
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ) {
            Some((name, ms)) => ms
                .trim()
                .parse()
                .map(Duration::from_millis)
                .map_err(|_| format!("{name}={ms:?}: a whole number of milliseconds"))?,
            None => Duration::from_secs(10),
        };
        let client = crate::tls::http_client(roots, timeout)
            .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the trace exporter needs the server's runtime".to_owned())?;
        Ok(Client {
            runtime,
            client,
            timeout,
        })
    }
}

#[async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, Full::new(body));
        let (client, timeout) = (self.client.clone(), self.timeout);
        let exchange = async move {
            let response = client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, ANSWER_LIMIT).collect().await?.to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        // The deadline's timer is made on the runtime too: this thread has none.
        let answer = self
            .runtime
            .spawn(async move { tokio::time::timeout(timeout, exchange).await })
            .await?;
        answer.map_err(|_| format!("no answer within {timeout:?}"))?
    }
}
