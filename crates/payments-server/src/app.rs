//! The application: the request pipeline and the handlers.
//!
//! A request goes: route → body (64 KiB, 413) → Bearer auth (401) → rate limit
//! ([`RateLimitLayer`], 429) → for `POST /api/v1/payments`: content type (415) → idempotency
//! ([`IdempotencyLayer`]: 400/422/409, replay) → the payment handler. Every layer is a
//! `tollgate-http` one; this module only composes them and writes the handlers.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{json, Value};
use tollgate_audit::{Action, AuditEvent, AuditLog, Outcome as AuditOutcome, PageRequest};
use tollgate_http::client_ip::{client_ip, TrustedProxies};
use tollgate_http::idempotency::{
    kept_headers, Disposition, IdempotencyLayer, StoreFailure, DEFAULT_BODY_LIMIT,
};
use tollgate_http::problem::Problem;
use tollgate_http::ratelimit::{RateLimitLayer, RateLimited, Subject};
use tollgate_idempotency::store::{IdempotencyStore, Lease, StoredResponse};
use tollgate_idempotency::{Idempotency, IdempotencyKey, Scope};
use tollgate_ratelimit::{PolicySet, RateLimiter, RequestContext};
use tollgate_retry::breaker::CircuitBreaker;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

use crate::config::{ApiKey, Timeouts};
use crate::ledger::{Completion, Finished, Ledger, LedgerError};
use crate::metrics::Metrics;
use crate::payment::{Invalid, Payment, PaymentRequest, Status};
use crate::processor::{Charge, ChargeResult, PaymentProcessor};
use crate::routes::{self, Matched, NoMatch, Route};
use crate::{auth, health};

type Body = Full<Bytes>;
type Pipeline = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// `X-Request-Id`.
const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
/// How long the processor may take before its answer counts as lost.
const PROCESSOR_TIMEOUT: Duration = Duration::from_secs(10);
/// The most requests `simulate-concurrent` sends.
const MAX_SIMULATED: u32 = 100;

/// The authenticated user, put in request extensions by the front.
#[derive(Clone, Debug)]
struct Caller(String);

/// The request id, put in request extensions by the front.
#[derive(Clone, Debug)]
struct RequestId(String);

/// The client address after trusted-proxy handling.
#[derive(Clone, Copy, Debug)]
struct ClientIp(IpAddr);

/// What the server is made of; built by `main`.
#[derive(Debug)]
pub(crate) struct Parts {
    pub(crate) keys: Vec<ApiKey>,
    pub(crate) policies: PolicySet,
    pub(crate) limiter: Arc<dyn RateLimiter>,
    pub(crate) idempotency: Idempotency<Arc<dyn IdempotencyStore>>,
    pub(crate) idempotency_ttl: Duration,
    pub(crate) ledger: Arc<dyn Ledger>,
    pub(crate) audit: Arc<dyn AuditLog>,
    pub(crate) processor: Arc<dyn PaymentProcessor>,
    pub(crate) breaker: CircuitBreaker,
    pub(crate) services: health::Services,
    pub(crate) trusted_proxies: TrustedProxies,
    pub(crate) timeouts: Timeouts,
}

/// The running application.
#[derive(Debug)]
pub(crate) struct App {
    keys: auth::Keys,
    policies: Arc<PolicySet>,
    limiter: Arc<dyn RateLimiter>,
    idempotency_ttl: Duration,
    ledger: Arc<dyn Ledger>,
    audit: Arc<dyn AuditLog>,
    processor: Arc<dyn PaymentProcessor>,
    breaker: CircuitBreaker,
    pub(crate) services: health::Services,
    pub(crate) metrics: Metrics,
    trusted_proxies: TrustedProxies,
    timeouts: Timeouts,
    /// Rate limiting in front of every `/api/` handler.
    limited: Pipeline,
}

fn respond(status: StatusCode, body: &impl serde::Serialize) -> Response<Body> {
    json_bytes(status, body).map(Full::new)
}

/// A JSON response with its body as bytes (what an idempotency record stores).
fn json_bytes(status: StatusCode, body: &impl serde::Serialize) -> Response<Bytes> {
    // Straight to bytes: `Value`'s `Display` goes through `fmt::Write` and costs twice as much.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Bytes::from(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn problem(problem: Problem) -> Response<Body> {
    let (parts, body) = problem.into_response().into_parts();
    Response::from_parts(parts, Full::new(body))
}

fn simple_problem(status: StatusCode, detail: impl Into<String>) -> Response<Body> {
    problem(Problem::new(status, status.canonical_reason().unwrap_or("Error")).detail(detail))
}

fn with_retry_after(mut response: Response<Body>, wait: Duration) -> Response<Body> {
    let secs = wait.as_millis().div_ceil(1000).max(1);
    if let Ok(value) = HeaderValue::try_from(secs.to_string()) {
        response.headers_mut().insert(RETRY_AFTER, value);
    }
    response
}

fn with_disposition(mut response: Response<Body>, disposition: Disposition) -> Response<Body> {
    response.extensions_mut().insert(disposition);
    response
}

fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}

/// The response's body as JSON, if it is JSON.
fn body_json(response: &Response<Body>) -> Option<Value> {
    // `Full` holds its bytes: reading them back is a clone of an `Arc`, not a copy.
    let bytes = response
        .body()
        .clone()
        .collect()
        .now_or_never()?
        .ok()?
        .to_bytes();
    serde_json::from_slice(&bytes).ok()
}

/// Polls a future once; `Full`'s body is always ready.
trait NowOrNever: std::future::Future + Sized {
    fn now_or_never(self) -> Option<Self::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut future = std::pin::pin!(self);
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        }
    }
}

impl<F: std::future::Future> NowOrNever for F {}

impl App {
    /// Builds the application and its pipeline.
    pub(crate) fn new(parts: Parts) -> Arc<Self> {
        let metrics = Metrics::new();
        let gauge = metrics.breaker_state.clone();
        parts.breaker.on_transition(move |transition| {
            use tollgate_retry::breaker::State;
            gauge.set(match transition.to {
                State::Closed => 0,
                State::Open => 1,
                State::HalfOpen => 2,
            });
            tracing::warn!(from = ?transition.from, to = ?transition.to, "payment processor circuit breaker changed state");
        });
        let policies = Arc::new(parts.policies);
        let idempotency = Arc::new(parts.idempotency);
        Arc::new_cyclic(|app: &Weak<App>| {
            let payments = payment_pipeline(app.clone(), idempotency);
            let limited = rate_limit_pipeline(
                app.clone(),
                payments,
                Arc::clone(&parts.limiter),
                (*policies).clone(),
            );
            App {
                keys: auth::Keys::new(&parts.keys),
                policies,
                limiter: parts.limiter,
                idempotency_ttl: parts.idempotency_ttl,
                ledger: parts.ledger,
                audit: parts.audit,
                processor: parts.processor,
                breaker: parts.breaker,
                services: parts.services,
                metrics,
                trusted_proxies: parts.trusted_proxies,
                timeouts: parts.timeouts,
                limited,
            }
        })
    }

    /// Answers one request from a client at `peer`.
    pub(crate) async fn serve<B>(&self, request: Request<B>, peer: SocketAddr) -> Response<Body>
    where
        B: http_body::Body + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let started = Instant::now();
        let id = request_id(request.headers());
        let method = request.method().clone();
        let matched = routes::find(&method, request.uri().path());
        let template = matched.as_ref().map_or("unmatched", |m| m.template);
        let (mut response, user) = match matched {
            Ok(matched) => self.answer(request, matched, peer, &id).await,
            Err(NoMatch::NotFound) => (
                simple_problem(
                    StatusCode::NOT_FOUND,
                    format!("no route for {}", request.uri().path()),
                ),
                None,
            ),
            Err(NoMatch::MethodNotAllowed(allowed)) => {
                let mut response = simple_problem(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{} accepts {allowed}", request.uri().path()),
                );
                response
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allowed));
                (response, None)
            }
        };
        if let Ok(value) = HeaderValue::try_from(id.as_str()) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        if let Some(failure) = response.extensions().get::<StoreFailure>() {
            tracing::warn!(request_id = %id, error = %failure.0, "idempotency store failed");
        }
        let status = response.status();
        let elapsed = started.elapsed();
        self.metrics
            .request_duration
            .with_label_values(&[template, method.as_str(), status.as_str()])
            .observe(elapsed.as_secs_f64());
        tracing::info!(
            request_id = %id,
            method = %method,
            route = template,
            status = status.as_u16(),
            user = user.as_deref().unwrap_or("-"),
            latency_ms = elapsed.as_secs_f64() * 1e3,
            "request"
        );
        response
    }

    async fn answer<B>(
        &self,
        request: Request<B>,
        matched: Matched,
        peer: SocketAddr,
        id: &str,
    ) -> (Response<Body>, Option<String>)
    where
        B: http_body::Body + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let (mut parts, body) = request.into_parts();
        // One deadline for the whole request: a client too slow to send its body gets 408, a
        // handler too slow to answer gets 503.
        let deadline = Instant::now() + self.timeouts.request;
        let read = Limited::new(body, DEFAULT_BODY_LIMIT).collect();
        let body = match tokio::time::timeout_at(deadline.into(), read).await {
            Err(_) => {
                let detail = format!(
                    "the request body did not arrive within {:?}",
                    self.timeouts.request
                );
                return (simple_problem(StatusCode::REQUEST_TIMEOUT, detail), None);
            }
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
                let detail = format!("the request body is larger than {DEFAULT_BODY_LIMIT} bytes");
                return (simple_problem(StatusCode::PAYLOAD_TOO_LARGE, detail), None);
            }
            Ok(Err(error)) => {
                let detail = format!("the request body could not be read: {error}");
                return (simple_problem(StatusCode::BAD_REQUEST, detail), None);
            }
        };
        // Refused before the rate limiter: anonymous traffic must not drain the global quota
        // that authenticated users depend on.
        let user = if matched.authenticated {
            match self.keys.authenticate(&parts.headers) {
                Some(user) => Some(user.to_owned()),
                None => return (unauthorized(), None),
            }
        } else {
            None
        };
        let ip = client_ip(peer.ip(), &parts.headers, &self.trusted_proxies);
        parts.extensions.insert(ClientIp(ip));
        parts.extensions.insert(RequestId(id.to_owned()));
        if let Some(user) = &user {
            parts.extensions.insert(Caller(user.clone()));
        }
        let key = IdempotencyKey::from_headers(&parts.headers)
            .ok()
            .map(|k| k.as_str().to_owned());
        let rate_limited = matched.rate_limited();
        let route = matched.route;
        parts.extensions.insert(matched);
        let request = Request::from_parts(parts, Full::new(body));
        let handled = async {
            if rate_limited {
                self.limited
                    .clone()
                    .oneshot(request)
                    .await
                    .unwrap_or_else(|e| match e {})
            } else {
                self.dispatch(request).await
            }
        };
        let response = match tokio::time::timeout_at(deadline.into(), handled).await {
            Ok(response) => response,
            // Dropping a payment mid-way is safe: its claim expires after the lease and the
            // retry reconciles with the processor.
            Err(_) => with_retry_after(
                simple_problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the request did not finish within {:?}",
                        self.timeouts.request
                    ),
                ),
                Duration::from_secs(1),
            ),
        };
        if route == Route::CreatePayment {
            if let Some(user) = &user {
                self.account_payment(user, id, key.as_deref(), &response)
                    .await;
            }
        }
        (response, user)
    }

    /// Counts and audits what the pipeline answered to a payment request before (or instead
    /// of) the handler; the handler accounts for its own executions.
    async fn account_payment(
        &self,
        user: &str,
        request_id: &str,
        key: Option<&str>,
        response: &Response<Body>,
    ) {
        let replayed = response.headers().get("idempotent-replayed");
        let status = response.status();
        let (outcome, action) = match replayed.map(HeaderValue::as_bytes) {
            Some(b"false") => return,
            Some(_) => {
                self.metrics.idempotent_replays.inc();
                ("replayed", Action::PAYMENT_REPLAY)
            }
            None if status == StatusCode::TOO_MANY_REQUESTS => {
                if let Some(denied) = response.extensions().get::<RateLimited>() {
                    self.metrics
                        .rate_limit_exceeded
                        .with_label_values(&[&denied.policy])
                        .inc();
                }
                ("rate_limited", Action::RATE_LIMITED)
            }
            None if status == StatusCode::CONFLICT => {
                self.metrics.concurrent_conflicts.inc();
                ("conflicted", Action::IDEMPOTENCY_CONFLICT)
            }
            None if status == StatusCode::UNPROCESSABLE_ENTITY => {
                ("rejected", Action::IDEMPOTENCY_MISMATCH)
            }
            None if status.is_server_error() => ("unavailable", Action::PAYMENT_ATTEMPT),
            None => ("rejected", Action::VALIDATION_FAILED),
        };
        self.metrics
            .payment_requests
            .with_label_values(&[outcome])
            .inc();
        let audit_outcome = if outcome == "replayed" {
            AuditOutcome::Success
        } else {
            AuditOutcome::Denied
        };
        let mut event = AuditEvent::new(user, action, audit_outcome)
            .status(status.as_u16())
            .request_id(request_id);
        if let Some(key) = key {
            event = event.idempotency_key(key);
        }
        // A replayed payment names itself in `Location`: no need to parse its body.
        if let Some(id) = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| l.strip_prefix("/api/v1/payments/"))
        {
            event = event.transaction_id(id);
        }
        self.record(event).await;
    }

    /// Hands an audit event to the sink before the client is answered: once accepted, the
    /// PostgreSQL sink writes it even if the server is shut down right after (its queue is
    /// flushed at shutdown), so an answered request always has its entry. (Accepting is a
    /// queue push; it waits only when the queue is full, which is the backpressure we want.)
    async fn record(&self, event: AuditEvent) {
        if let Err(error) = self.audit.record(event).await {
            tracing::warn!(%error, "audit event not recorded");
        }
    }

    /// Runs the handler of an authenticated, admitted request.
    async fn dispatch(&self, request: Request<Body>) -> Response<Body> {
        let Some(matched) = request.extensions().get::<Matched>().cloned() else {
            return simple_problem(StatusCode::INTERNAL_SERVER_ERROR, "unrouted request");
        };
        let user = request.extensions().get::<Caller>().map(|c| c.0.clone());
        match (matched.route, user) {
            (Route::Health, _) => {
                let report = self.health().await;
                respond(StatusCode::OK, &report.to_json())
            }
            (Route::Ready, _) => {
                let report = self.health().await;
                let services = report.services_json();
                if report.ready() {
                    respond(
                        StatusCode::OK,
                        &json!({ "ready": true, "services": services }),
                    )
                } else {
                    // An error like any other: problem+json, with the services that are down.
                    with_retry_after(
                        problem(
                            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Not Ready")
                                .detail("a configured backend is down; see `services`")
                                .extension("ready", false)
                                .extension("services", services),
                        ),
                        Duration::from_secs(1),
                    )
                }
            }
            (Route::Metrics, _) => {
                self.metrics
                    .observe_limiter(self.services.limiter_degraded());
                let mut response = Response::new(Full::new(Bytes::from(self.metrics.render())));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            (Route::RetryConfig, _) => respond(
                StatusCode::OK,
                &serde_json::to_value(tollgate_retry::config::RetryConfig::default())
                    .unwrap_or_default(),
            ),
            (Route::GetPayment, Some(user)) => {
                let id = matched.param.unwrap_or_default();
                match self.ledger.find(&user, &id).await {
                    Ok(Some(payment)) => respond(StatusCode::OK, &payment.view()),
                    // Someone else's payment is indistinguishable from no payment.
                    Ok(None) => simple_problem(
                        StatusCode::NOT_FOUND,
                        format!("no payment {id:?} for this user"),
                    ),
                    Err(error) => unavailable(&error),
                }
            }
            (Route::RateLimits, Some(user)) => self.rate_limits(&request, &user).await,
            (Route::AuditLogs, Some(user)) => self.audit_logs(&request, &user).await,
            (Route::SimulateConcurrent, Some(user)) => {
                Box::pin(self.simulate(request, &user)).await
            }
            // Every other route needs a key (checked by the front already).
            (_, None) => unauthorized(),
            // Served by the idempotency pipeline, never dispatched here.
            (Route::CreatePayment, Some(_)) => {
                simple_problem(StatusCode::INTERNAL_SERVER_ERROR, "misrouted request")
            }
        }
    }

    /// Probes the backends. Boxed: the probes' futures are large (~14 KB), and every request's
    /// future would otherwise carry that size through each move (measured: half of the
    /// server's instructions were `memcpy` of futures before this).
    fn health(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = health::Report> + Send + '_>> {
        Box::pin(self.services.check())
    }

    async fn rate_limits(&self, request: &Request<Body>, user: &str) -> Response<Body> {
        let ip = request.extensions().get::<ClientIp>().map(|c| c.0);
        let keys: Vec<_> = self
            .policies
            .policies()
            .iter()
            .filter_map(|policy| {
                // Endpoint-bound policies are reported for their endpoint.
                let endpoint = policy.endpoint().unwrap_or("GET /api/v1/rate-limits");
                let mut ctx = RequestContext::new().user(user).endpoint(endpoint);
                if let Some(ip) = ip {
                    ctx = ctx.ip(ip);
                }
                policy.key_for(&ctx)
            })
            .collect();
        let decision = match self.limiter.peek(&keys, 1).await {
            Ok(decision) => decision,
            Err(error) => {
                return with_retry_after(
                    simple_problem(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("the rate limiter is unavailable: {error}"),
                    ),
                    Duration::from_secs(1),
                )
            }
        };
        let now = decision.now().as_micros();
        let policies: Vec<Value> = decision
            .policies()
            .iter()
            .map(|d| {
                let policy = d.policy();
                let reset = (now + u64::try_from(d.reset_after().as_micros()).unwrap_or(0))
                    .div_ceil(1_000_000);
                json!({
                    "name": policy.name(),
                    "scope": policy.scope().as_str(),
                    "algorithm": policy.algorithm().as_str(),
                    "endpoint": policy.endpoint(),
                    "limit": d.limit(),
                    "window_seconds": policy.window().as_secs_f64(),
                    "remaining": d.remaining(),
                    "reset": reset,
                })
            })
            .collect();
        respond(StatusCode::OK, &json!({ "policies": policies }))
    }

    async fn audit_logs(&self, request: &Request<Body>, user: &str) -> Response<Body> {
        let mut limit = None;
        let mut cursor = None;
        for (name, value) in query_pairs(request.uri().query()) {
            match name.as_str() {
                "limit" => match value.parse::<usize>() {
                    Ok(n) => limit = Some(n),
                    Err(_) => {
                        return simple_problem(
                            StatusCode::BAD_REQUEST,
                            format!("limit must be a whole number, got {value:?}"),
                        )
                    }
                },
                "cursor" => cursor = Some(value),
                _ => {}
            }
        }
        let page = match PageRequest::new(limit, cursor.as_deref()) {
            Ok(page) => page,
            Err(error) => return simple_problem(StatusCode::BAD_REQUEST, error.to_string()),
        };
        match self.audit.page(user, page).await {
            Ok(page) => respond(StatusCode::OK, &json!(page)),
            Err(error) => with_retry_after(
                simple_problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the audit trail is unavailable: {error}"),
                ),
                Duration::from_secs(1),
            ),
        }
    }

    /// Sends `concurrent_count` copies of the body as `POST /api/v1/payments` with one
    /// Idempotency-Key through the whole pipeline (rate limits included), all at once, and
    /// reports how each was answered.
    async fn simulate(self: &App, request: Request<Body>, user: &str) -> Response<Body> {
        let mut count = 10;
        for (name, value) in query_pairs(request.uri().query()) {
            if name == "concurrent_count" {
                match value.parse::<u32>() {
                    Ok(n) if (1..=MAX_SIMULATED).contains(&n) => count = n,
                    _ => {
                        return simple_problem(
                            StatusCode::BAD_REQUEST,
                            format!("concurrent_count must be 1–{MAX_SIMULATED}, got {value:?}"),
                        )
                    }
                }
            }
        }
        if let Err(problem_) = tollgate_http::content_type::require_json(request.headers()) {
            return problem(problem_);
        }
        let key = match request.headers().get("idempotency-key") {
            None => format!("simulate-{}", uuid::Uuid::now_v7().simple()),
            Some(_) => match IdempotencyKey::from_headers(request.headers()) {
                Ok(key) => key.as_str().to_owned(),
                Err(error) => return simple_problem(StatusCode::BAD_REQUEST, error.to_string()),
            },
        };
        let Ok(matched) = routes::find(&Method::POST, "/api/v1/payments") else {
            return simple_problem(StatusCode::INTERNAL_SERVER_ERROR, "no payment route");
        };
        let ip = request.extensions().get::<ClientIp>().copied();
        let id = request
            .extensions()
            .get::<RequestId>()
            .map_or_else(String::new, |r| r.0.clone());
        let body = request.into_body();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..count {
            let mut copy = Request::post("/api/v1/payments")
                .header(CONTENT_TYPE, "application/json")
                .header("idempotency-key", key.as_str())
                .body(body.clone())
                .unwrap_or_default();
            let child_id = format!("{id}.{i}");
            copy.extensions_mut().insert(matched.clone());
            copy.extensions_mut().insert(Caller(user.to_owned()));
            copy.extensions_mut().insert(RequestId(child_id.clone()));
            if let Some(ip) = ip {
                copy.extensions_mut().insert(ip);
            }
            let pipeline = self.limited.clone();
            tasks.spawn(async move {
                let response = pipeline.oneshot(copy).await.unwrap_or_else(|e| match e {});
                (child_id, response)
            });
        }
        let (mut executed, mut replayed, mut conflicted, mut rate_limited, mut other) =
            (0, 0, 0, 0, 0);
        let mut ids = BTreeSet::new();
        let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
        while let Some(joined) = tasks.join_next().await {
            let Ok((child_id, response)) = joined else {
                other += 1;
                continue;
            };
            self.account_payment(user, &child_id, Some(&key), &response)
                .await;
            *statuses.entry(response.status().as_u16()).or_default() += 1;
            match (
                response.status(),
                response
                    .headers()
                    .get("idempotent-replayed")
                    .map(HeaderValue::as_bytes),
            ) {
                (_, Some(b"false")) => executed += 1,
                (_, Some(_)) => replayed += 1,
                (StatusCode::CONFLICT, None) => conflicted += 1,
                (StatusCode::TOO_MANY_REQUESTS, None) => rate_limited += 1,
                _ => other += 1,
            }
            if let Some(txn) = body_json(&response).and_then(|b| {
                b.get("transaction_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }) {
                ids.insert(txn);
            }
        }
        respond(
            StatusCode::OK,
            &json!({
                "concurrent_count": count,
                "idempotency_key": key,
                "executed": executed,
                "replayed": replayed,
                "conflicted": conflicted,
                "rate_limited": rate_limited,
                "other": other,
                "statuses": statuses,
                "transaction_ids": ids,
            }),
        )
    }

    /// `POST /api/v1/payments`, inside the idempotency layer: this request owns the key.
    async fn create_payment(&self, request: Request<Body>) -> Response<Body> {
        let (Some(lease), Some(scope), Some(Caller(user))) = (
            request.extensions().get::<Lease>().copied(),
            request.extensions().get::<Scope>().cloned(),
            request.extensions().get::<Caller>().cloned(),
        ) else {
            return simple_problem(StatusCode::INTERNAL_SERVER_ERROR, "payment without a lease");
        };
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map_or_else(String::new, |r| r.0.clone());
        let key = scope.key().as_str().to_owned();
        let started = Instant::now();
        let audit = |action: Action, outcome: AuditOutcome, status: StatusCode| {
            AuditEvent::new(user.as_str(), action, outcome)
                .status(status.as_u16())
                .idempotency_key(key.as_str())
                .request_id(request_id.as_str())
                .latency(started.elapsed())
        };
        let body = request
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let parsed = match PaymentRequest::parse(&body) {
            Ok(parsed) => parsed,
            Err(invalid) => {
                let response = match invalid {
                    Invalid::Malformed(message) => simple_problem(
                        StatusCode::BAD_REQUEST,
                        format!("the body is not a payment request: {message}"),
                    ),
                    Invalid::Fields(errors) => problem(
                        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid payment")
                            .detail("one or more fields are invalid; see `errors`")
                            .extension("errors", json!(errors)),
                    ),
                };
                self.metrics
                    .payment_requests
                    .with_label_values(&["rejected"])
                    .inc();
                self.record(audit(
                    Action::VALIDATION_FAILED,
                    AuditOutcome::Denied,
                    response.status(),
                ))
                .await;
                // Nothing happened: the key is free for a corrected request.
                return with_disposition(response, Disposition::Forget);
            }
        };
        // Only a resumed claim can find a payment under its key: an earlier owner got as far as
        // recording it (its answer was lost, it timed out, or its lease expired), so reconcile
        // instead of charging. A fresh claim skips the lookup: every path that records a
        // payment ends the claim as ambiguous or completed, never as "nothing happened".
        let existing = if lease.resumed {
            match self
                .ledger
                .find_by_key(&user, &key, self.idempotency_ttl)
                .await
            {
                Ok(existing) => existing,
                Err(error) => {
                    return with_disposition(
                        self.payment_unavailable(&error),
                        Disposition::Ambiguous,
                    )
                }
            }
        } else {
            None
        };
        // The breaker's permit, when taken before recording a new payment, is the one the charge
        // uses (no second acquisition that a half-open breaker could refuse in between).
        let mut permit = None;
        let (mut payment, known) = match existing {
            Some(payment) if payment.status != Status::Pending => {
                let result = match payment.status {
                    Status::Failed => ChargeResult::Declined {
                        code: payment.decline_code.clone().unwrap_or_default(),
                    },
                    _ => ChargeResult::Approved,
                };
                (payment, Some(result))
            }
            Some(payment) => {
                let known = match self.processor.lookup(&payment.transaction_id).await {
                    Ok(known) => known,
                    Err(error) => {
                        return with_disposition(
                            processor_failed(&payment, &error.to_string()),
                            Disposition::Ambiguous,
                        )
                    }
                };
                (payment, known)
            }
            None => {
                // Refuse before recording anything while the processor is known to be down.
                match self.breaker.try_acquire() {
                    Ok(acquired) => permit = Some(acquired),
                    Err(error) => {
                        let wait = match error {
                            tollgate_retry::Error::CircuitOpen { retry_after } => retry_after,
                            _ => Duration::from_secs(1),
                        };
                        self.metrics
                            .payment_requests
                            .with_label_values(&["unavailable"])
                            .inc();
                        return with_disposition(
                        with_retry_after(
                            simple_problem(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "the payment processor is unavailable (circuit open); nothing was charged",
                            ),
                            wait,
                        ),
                        Disposition::Forget,
                    );
                    }
                }
                let payment = Payment::pending(&user, Some(&key), parsed);
                let started_event = audit(
                    Action::PAYMENT_STARTED,
                    AuditOutcome::Success,
                    StatusCode::ACCEPTED,
                )
                .transaction_id(payment.transaction_id.as_str());
                if let Err(error) = self.ledger.insert_pending(&payment, started_event).await {
                    // The insert may have committed with its acknowledgement lost: keep the
                    // key so the retry looks the payment up rather than inserting twice.
                    return with_disposition(
                        self.payment_unavailable(&error),
                        Disposition::Ambiguous,
                    );
                }
                (payment, None)
            }
        };
        let result = match known {
            Some(result) => result,
            None => match self.charge(&payment, permit).await {
                Ok(result) => result,
                Err(detail) => {
                    self.metrics
                        .payment_requests
                        .with_label_values(&["failed"])
                        .inc();
                    self.record(
                        audit(
                            Action::PAYMENT_ATTEMPT,
                            AuditOutcome::Failure,
                            StatusCode::BAD_GATEWAY,
                        )
                        .transaction_id(payment.transaction_id.as_str())
                        .field("error", detail.as_str()),
                    )
                    .await;
                    return with_disposition(
                        processor_failed(&payment, &detail),
                        Disposition::Ambiguous,
                    );
                }
            },
        };
        let (status, outcome, label) = match &result {
            ChargeResult::Approved => {
                payment.status = Status::Succeeded;
                (StatusCode::CREATED, AuditOutcome::Success, "succeeded")
            }
            ChargeResult::Declined { code } => {
                payment.status = Status::Failed;
                payment.decline_code = Some(code.clone());
                (
                    StatusCode::PAYMENT_REQUIRED,
                    AuditOutcome::Failure,
                    "declined",
                )
            }
        };
        let response = payment_response(&payment, status);
        let stored = StoredResponse {
            status: status.as_u16(),
            headers: kept_headers(response.headers()),
            body: response.body().clone(),
        };
        let response = response.map(Full::new);
        let event = audit(Action::PAYMENT_ATTEMPT, outcome, status)
            .transaction_id(payment.transaction_id.as_str())
            .field("resumed", lease.resumed)
            .field("amount_minor", payment.amount_minor)
            .field("currency", payment.currency.as_str());
        let completion = Completion {
            scope: &scope,
            fence: lease.fence,
            response: &stored,
            ttl: self.idempotency_ttl,
        };
        let disposition = match self.ledger.finish(&payment, completion, event).await {
            Ok(Finished::RecordCompleted) => Disposition::Completed,
            Ok(Finished::RecordLeftToCaller) => Disposition::Store,
            Err(LedgerError::Fenced) => {
                // A newer owner holds the key and will reconcile this same payment. Giving the
                // key back with this stale fence is refused like any fenced-off write, so the
                // layer answers 409 with Retry-After and the front counts and audits the
                // conflict: the same path as a memory-backed owner whose completion is fenced.
                return with_disposition(response, Disposition::Ambiguous);
            }
            Err(error) => {
                // Charged, but not recorded as final: the retry reconciles with the processor.
                return with_disposition(self.payment_unavailable(&error), Disposition::Ambiguous);
            }
        };
        self.metrics
            .payment_requests
            .with_label_values(&[label])
            .inc();
        self.metrics.processed(payment.status == Status::Succeeded);
        with_disposition(response, disposition)
    }

    /// A payment the ledger could not serve: counted, and answered 503.
    fn payment_unavailable(&self, error: &LedgerError) -> Response<Body> {
        self.metrics
            .payment_requests
            .with_label_values(&["unavailable"])
            .inc();
        unavailable(error)
    }

    /// Charges through the circuit breaker (with `permit`, or a new one), with a deadline;
    /// `Err` means the answer is unknown.
    async fn charge(
        &self,
        payment: &Payment,
        permit: Option<tollgate_retry::breaker::Permit>,
    ) -> Result<ChargeResult, String> {
        let permit = match permit {
            Some(permit) => permit,
            None => self.breaker.try_acquire().map_err(|e| e.to_string())?,
        };
        let charge = Charge {
            reference: &payment.transaction_id,
            amount_minor: payment.amount_minor,
            currency: &payment.currency,
            payment_method: &payment.payment_method,
        };
        match tokio::time::timeout(PROCESSOR_TIMEOUT, self.processor.charge(&charge)).await {
            Ok(Ok(result)) => {
                // A decline is the processor working correctly.
                permit.success();
                Ok(result)
            }
            Ok(Err(error)) => {
                permit.failure();
                Err(error.to_string())
            }
            Err(_) => {
                permit.failure();
                Err(format!(
                    "no answer from the processor within {PROCESSOR_TIMEOUT:?}"
                ))
            }
        }
    }
}

fn unauthorized() -> Response<Body> {
    let mut response = simple_problem(
        StatusCode::UNAUTHORIZED,
        "send `Authorization: Bearer <API key>` with a valid key",
    );
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"tollgate\""),
    );
    response
}

/// A payment's answer, with its body as bytes so the same bytes are stored and sent.
fn payment_response(payment: &Payment, status: StatusCode) -> Response<Bytes> {
    let location = format!("/api/v1/payments/{}", payment.transaction_id);
    let mut response = if status == StatusCode::PAYMENT_REQUIRED {
        Problem::new(status, "Payment declined")
            .detail("the payment processor declined the payment")
            .extension("transaction_id", payment.transaction_id.as_str())
            .extension(
                "decline_code",
                payment.decline_code.clone().unwrap_or_default(),
            )
            .extension("payment", payment.to_json())
            .into_response()
    } else {
        json_bytes(status, &payment.view())
    };
    if let Ok(value) = HeaderValue::try_from(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

fn processor_failed(payment: &Payment, detail: &str) -> Response<Body> {
    problem(
        Problem::new(StatusCode::BAD_GATEWAY, "Payment processor error")
            .detail(format!(
                "{detail}; the payment is pending: retry with the same Idempotency-Key to learn its outcome (it is never charged twice)"
            ))
            .extension("transaction_id", payment.transaction_id.as_str()),
    )
}

fn unavailable(error: &LedgerError) -> Response<Body> {
    // The database's own message stays in the log: it can name hosts, schemas and columns.
    tracing::warn!(%error, "payment storage failed");
    with_retry_after(
        simple_problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "payment storage is unavailable; retry with the same Idempotency-Key",
        ),
        Duration::from_secs(1),
    )
}

/// `name=value` pairs of a query string, percent-decoded.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The rate-limit layer in front of every `/api/` handler; payments go on to `payments`.
fn rate_limit_pipeline(
    app: Weak<App>,
    payments: Pipeline,
    limiter: Arc<dyn RateLimiter>,
    policies: PolicySet,
) -> Pipeline {
    let handlers = tower::service_fn(move |request: Request<Body>| {
        let app = app.upgrade();
        let payments = payments.clone();
        async move {
            let Some(app) = app else {
                return Ok::<_, Infallible>(shutting_down());
            };
            let is_payment = request
                .extensions()
                .get::<Matched>()
                .is_some_and(|m| m.route == Route::CreatePayment)
                && request.extensions().get::<Caller>().is_some();
            if !is_payment {
                return Ok(app.dispatch(request).await);
            }
            if let Err(problem_) = tollgate_http::content_type::require_json(request.headers()) {
                return Ok(problem(problem_));
            }
            payments.oneshot(request).await
        }
    });
    let layer = RateLimitLayer::new(limiter, policies, |request: &Request<Body>| {
        let endpoint = request
            .extensions()
            .get::<Matched>()
            .map(|m| format!("{} {}", request.method(), m.template));
        Subject {
            user: request.extensions().get::<Caller>().map(|c| c.0.clone()),
            ip: request.extensions().get::<ClientIp>().map(|c| c.0),
            endpoint,
        }
    });
    BoxCloneSyncService::new(layer.layer(handlers))
}

/// The idempotency layer around the payment handler.
fn payment_pipeline(
    app: Weak<App>,
    idempotency: Arc<Idempotency<Arc<dyn IdempotencyStore>>>,
) -> Pipeline {
    let handler = tower::service_fn(move |request: Request<Body>| {
        let app = app.upgrade();
        async move {
            Ok::<_, Infallible>(match app {
                Some(app) => app.create_payment(request).await,
                None => shutting_down(),
            })
        }
    });
    let layer = IdempotencyLayer::new(idempotency, |request: &Request<Body>| {
        let user = request.extensions().get::<Caller>()?;
        Some((user.0.clone(), "/api/v1/payments".to_owned()))
    });
    BoxCloneSyncService::new(layer.layer(handler))
}

fn shutting_down() -> Response<Body> {
    with_retry_after(
        simple_problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        ),
        Duration::from_secs(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_request_ids() {
        assert_eq!(
            query_pairs(Some("limit=5&cursor=a%2Db&x")),
            vec![
                ("limit".to_owned(), "5".to_owned()),
                ("cursor".to_owned(), "a-b".to_owned()),
                ("x".to_owned(), String::new())
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        let mut headers = http::HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
        headers.insert("x-request-id", HeaderValue::from_static("bad id"));
        assert_eq!(request_id(&headers).len(), 36);
    }
}

#[cfg(test)]
/// Every request's future is moved several times (boxed by tower, polled by hyper): a large one
/// costs a `memcpy` per move. A health probe inlined into it once made it 16 KB and half the
/// server's instructions `memcpy`.
mod future_size {
    use super::*;

    #[tokio::test]
    async fn request_futures_stay_small() {
        let audit = Arc::new(tollgate_audit::MemoryAuditLog::new(10));
        let store: Arc<dyn IdempotencyStore> =
            Arc::new(tollgate_idempotency::memory::MemoryStore::new(10));
        let app = App::new(Parts {
            keys: vec![],
            policies: crate::config::FileConfig::default()
                .policy_set()
                .expect("the default table is valid"),
            limiter: Arc::new(tollgate_ratelimit::MemoryLimiter::new()),
            idempotency: Idempotency::new(store, Default::default()),
            idempotency_ttl: Duration::from_secs(1),
            ledger: Arc::new(crate::ledger::MemoryLedger::new(audit.clone())),
            audit,
            processor: Arc::new(crate::processor::SimulatedProcessor::in_memory(
                Default::default(),
            )),
            breaker: CircuitBreaker::new(Default::default()),
            services: Default::default(),
            trusted_proxies: TrustedProxies::none(),
            timeouts: Default::default(),
        });
        let req = || Request::new(Full::new(Bytes::new()));
        let peer: SocketAddr = "127.0.0.1:1".parse().expect("an address");
        let serve = std::mem::size_of_val(&app.serve(req(), peer));
        let dispatch = std::mem::size_of_val(&app.dispatch(req()));
        assert!(serve <= 4096, "serve future: {serve} bytes");
        assert!(dispatch <= 2048, "dispatch future: {dispatch} bytes");
    }
}
