//! A processor over HTTP (`PROCESSOR_URL`), speaking the `mock-processor` API: `POST
//! /v1/charges` with the payment's transaction id as the upstream `Idempotency-Key`, and `GET
//! /v1/charges/{reference}` to reconcile.
//!
//! Every call is retried by `tollgate-retry` — exponential backoff with full jitter, the
//! processor's `Retry-After`, a retry budget shared by every call — each attempt under its own
//! deadline and the whole call under `processor.timeout` (enforced by the payment flow). A
//! `POST` is safe to repeat because the processor deduplicates by the key: a lost answer is
//! retried and replayed, never charged twice. When every attempt fails, the answer is unknown
//! and the payment stays pending for the client's retry to reconcile.

use std::path::Path;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use serde::Deserialize;
use tollgate_retry::backoff::Backoff;
use tollgate_retry::budget::{Cause, RetryBudget};
use tollgate_retry::classify::{Verdict, classify_response};
use tollgate_retry::retry::{Attempt, Retrier, RetryPolicy};
use tracing::{Instrument, Span};

use super::{Charge, ChargeResult, PaymentProcessor, ProcessorError};
use crate::config::ProcessorTuning;

type Connector = crate::tls::HttpsConnector;

/// The largest processor answer read.
const ANSWER_LIMIT: usize = 64 * 1024;

/// The processor at `PROCESSOR_URL`.
#[derive(Debug)]
pub(crate) struct HttpProcessor {
    /// `scheme://authority` and any path prefix, without a trailing `/`.
    base: String,
    /// The processor's host and port, for the client spans.
    server: (String, u16),
    client: Client<Connector, Full<Bytes>>,
    retrier: Retrier,
    attempt_timeout: Duration,
}

/// What one attempt got.
#[derive(Debug, thiserror::Error)]
enum CallError {
    /// No answer: refused, reset, closed or past the attempt's deadline. The charge may have
    /// been made.
    #[error("no answer from the processor: {0}")]
    Transport(String),
    /// No answer within the attempt's deadline.
    #[error("no answer from the processor within {0:?}")]
    TimedOut(Duration),
    /// An answer worth retrying (`429`, `5xx`, `409` with `Retry-After`).
    #[error("the processor answered {status}")]
    Retryable {
        status: StatusCode,
        after: Option<Duration>,
    },
    /// An answer no retry changes: the request was wrong (`400`, `422`).
    #[error("the processor refused the request with {status}: {detail}")]
    Refused { status: StatusCode, detail: String },
    /// A `2xx` whose body is not a charge.
    #[error("the processor's answer is not a charge: {0}")]
    Malformed(String),
}

impl CallError {
    fn verdict(&self) -> Attempt {
        match self {
            CallError::Transport(_) => Attempt::retry(),
            CallError::TimedOut(_) => Attempt::Retry {
                after: None,
                cause: Cause::Timeout,
            },
            CallError::Retryable { after, .. } => Attempt::Retry {
                after: *after,
                cause: Cause::Error,
            },
            CallError::Refused { .. } | CallError::Malformed(_) => Attempt::Done,
        }
    }

    fn into_processor_error(self) -> ProcessorError {
        match self {
            // The payment sent something the processor will never accept: not an outage.
            CallError::Refused { .. } => ProcessorError::caused_by_request(self),
            other => ProcessorError::new(other),
        }
    }
}

/// A charge as the processor shows it (the fields this server reads).
#[derive(Debug, Deserialize)]
struct ChargeBody {
    status: String,
    #[serde(default)]
    decline_code: Option<String>,
}

impl ChargeBody {
    fn result(self) -> Result<ChargeResult, CallError> {
        match self.status.as_str() {
            "succeeded" => Ok(ChargeResult::Approved),
            "declined" => Ok(ChargeResult::Declined {
                code: self.decline_code.unwrap_or_else(|| "declined".into()),
            }),
            other => Err(CallError::Malformed(format!("status {other:?}"))),
        }
    }
}

impl HttpProcessor {
    /// The processor at `url` (`http://` or `https://host:port`, optionally with a path
    /// prefix); an `https` server's certificate must chain to the system's CAs, or to those in
    /// the PEM file `ca_file`.
    pub(crate) fn new(
        url: &str,
        tuning: &ProcessorTuning,
        ca_file: Option<&Path>,
    ) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("PROCESSOR_URL {url:?}: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(format!(
                "PROCESSOR_URL {url:?}: expected http://host:port or https://host:port"
            ));
        }
        let client = client(tuning, ca_file, uri.scheme_str() == Some("https"))?;
        let policy = RetryPolicy::new(Backoff::exponential(
            Duration::from_millis(25),
            Duration::from_secs(1),
        ))
        .max_attempts(tuning.max_attempts)
        .max_elapsed(tuning.timeout)
        .budget(RetryBudget::aws_standard());
        let retrier = Retrier::new(policy).notify(|retrying| {
            tracing::debug!(
                attempt = retrying.attempt,
                delay = ?retrying.delay,
                "retrying the processor call"
            );
        });
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(HttpProcessor {
            base: url.trim_end_matches('/').to_owned(),
            server: (uri.host().unwrap_or_default().to_owned(), port),
            client,
            retrier,
            attempt_timeout: tuning.attempt_timeout,
        })
    }

    /// One attempt: the status and body, or why there is none.
    async fn send(&self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), CallError> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| CallError::Transport(crate::error_chain(&e)))?;
            let (parts, body) = response.into_parts();
            // A charge is a few hundred bytes: a processor sending more is not one to trust.
            let body = http_body_util::Limited::new(body, ANSWER_LIMIT)
                .collect()
                .await
                .map_err(|e| CallError::Transport(format!("the answer: {e}")))?
                .to_bytes();
            let verdict = classify_response(parts.status, &parts.headers, SystemTime::now());
            if let Verdict::Retry { after } = verdict {
                return Err(CallError::Retryable {
                    status: parts.status,
                    after,
                });
            }
            Ok((parts.status, body))
        };
        let result = match tokio::time::timeout(self.attempt_timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(CallError::TimedOut(self.attempt_timeout)),
        };
        record_answer(&result);
        result
    }

    /// One attempt's client span, with OpenTelemetry's HTTP client attributes; its
    /// `http.request.resend_count` counts the attempts before it.
    fn attempt_span(&self, method: &Method, template: &'static str, attempt: u32) -> Span {
        let (host, port) = (&self.server.0, self.server.1);
        let span = tracing::info_span!(
            "processor call",
            http.request.method = method.as_str(),
            url.template = template,
            server.address = host.as_str(),
            server.port = port,
            http.request.resend_count = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
            otel.name = tracing::field::Empty,
            otel.kind = tracing::field::Empty,
        );
        if attempt > 1 {
            span.record("http.request.resend_count", attempt - 1);
        }
        #[cfg(feature = "otlp")]
        if crate::telemetry::exporting() {
            span.record("otel.name", format!("{method} {template}"));
            span.record("otel.kind", "client");
        }
        span
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, CallError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if !body.is_empty() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        request
            .body(Full::new(body))
            .map_err(|e| CallError::Refused {
                status: StatusCode::BAD_REQUEST,
                detail: e.to_string(),
            })
    }

    async fn charge_once(
        &self,
        charge: &Charge<'_>,
        body: Bytes,
    ) -> Result<ChargeResult, CallError> {
        let mut request = self.request(Method::POST, "/v1/charges", body)?;
        let key =
            http::HeaderValue::from_str(charge.reference).map_err(|e| CallError::Refused {
                status: StatusCode::BAD_REQUEST,
                detail: e.to_string(),
            })?;
        request.headers_mut().insert("idempotency-key", key);
        // Exported, the processor's side joins the trace under this attempt's client span;
        // otherwise under the id the payment chose for its call.
        #[cfg(feature = "otlp")]
        let attempt_traceparent = crate::telemetry::current_traceparent();
        #[cfg(not(feature = "otlp"))]
        let attempt_traceparent: Option<String> = None;
        let traceparent = attempt_traceparent.as_deref().or(charge.traceparent);
        if let Some(value) = traceparent.and_then(|v| http::HeaderValue::from_str(v).ok()) {
            request
                .headers_mut()
                .insert(crate::trace::TRACEPARENT, value);
        }
        let (status, body) = self.send(request).await?;
        if !status.is_success() {
            return Err(refused(status, &body));
        }
        parse(&body)?.result()
    }

    async fn lookup_once(&self, reference: &str) -> Result<Option<ChargeResult>, CallError> {
        let request = self.request(
            Method::GET,
            &format!("/v1/charges/{reference}"),
            Bytes::new(),
        )?;
        let (status, body) = self.send(request).await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => parse(&body)?.result().map(Some),
            status => Err(refused(status, &body)),
        }
    }
}

/// A pooled HTTP/1.1 client for `http` and `https` (rustls, with the system's CAs or those in
/// `ca_file`).
fn client(
    tuning: &ProcessorTuning,
    ca_file: Option<&Path>,
    https: bool,
) -> Result<Client<Connector, Full<Bytes>>, String> {
    let roots = match ca_file {
        Some(path) => {
            crate::tls::roots_in_file(path).map_err(|e| format!("PROCESSOR_CA_FILE {e}"))?
        }
        // Plain http needs no CA: a container without system certificates still starts.
        None if !https => rustls::RootCertStore::empty(),
        None => crate::tls::roots(None).map_err(|_| {
            "PROCESSOR_URL: no system CA certificates found to verify the processor; set PROCESSOR_CA_FILE".to_owned()
        })?,
    };
    crate::tls::http_client(roots, tuning.attempt_timeout)
        .map_err(|e| format!("PROCESSOR_URL: {e}"))
}

fn parse(body: &[u8]) -> Result<ChargeBody, CallError> {
    serde_json::from_slice(body).map_err(|e| CallError::Malformed(e.to_string()))
}

/// A final refusal, with the processor's problem detail when it sent one.
fn refused(status: StatusCode, body: &[u8]) -> CallError {
    let detail = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
        .unwrap_or_default();
    CallError::Refused { status, detail }
}

/// Records an attempt's answer on its span: the status, and `error.type` when it failed (the
/// status of any `4xx` or `5xx`, as OpenTelemetry has it for a client, or `timeout` or
/// `transport` without an answer).
fn record_answer(result: &Result<(StatusCode, Bytes), CallError>) {
    let span = Span::current();
    match result {
        Ok((status, _)) | Err(CallError::Retryable { status, .. }) => {
            span.record("http.response.status_code", status.as_u16());
            if status.is_client_error() || status.is_server_error() {
                span.record("error.type", status.as_str());
            }
        }
        Err(CallError::TimedOut(_)) => {
            span.record("error.type", "timeout");
        }
        Err(_) => {
            span.record("error.type", "transport");
        }
    }
}

fn verdict<T>(result: &Result<T, CallError>) -> Attempt {
    match result {
        Ok(_) => Attempt::Done,
        Err(error) => error.verdict(),
    }
}

#[async_trait]
impl PaymentProcessor for HttpProcessor {
    async fn charge(&self, charge: &Charge<'_>) -> Result<ChargeResult, ProcessorError> {
        let body = serde_json::json!({
            "amount": charge.amount_minor,
            "currency": charge.currency,
            "payment_method": charge.payment_method,
        });
        let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let attempt = |attempt| {
            let span = self.attempt_span(&Method::POST, "/v1/charges", attempt);
            self.charge_once(charge, body.clone()).instrument(span)
        };
        self.retrier
            .run(attempt, verdict)
            .await
            .map_err(CallError::into_processor_error)
    }

    async fn lookup(&self, reference: &str) -> Result<Option<ChargeResult>, ProcessorError> {
        let attempt = |attempt| {
            let span = self.attempt_span(&Method::GET, "/v1/charges/{reference}", attempt);
            self.lookup_once(reference).instrument(span)
        };
        self.retrier
            .run(attempt, verdict)
            .await
            .map_err(CallError::into_processor_error)
    }
}
