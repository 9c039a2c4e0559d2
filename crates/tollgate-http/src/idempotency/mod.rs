//! A tower middleware that makes a route idempotent with an [`Idempotency`] driver.
//!
//! For each request: parse the `Idempotency-Key` (400 if missing, repeated or malformed), read
//! the body (413 past the limit), fingerprint method + route + canonical JSON body (400 if not
//! JSON), then let the driver decide: run the inner service once and store its response, replay
//! a stored one, wait for a duplicate in flight, or answer 409 (with `Retry-After`) or 422. Every
//! answer carries `Idempotent-Replayed: true|false`; replays repeat the stored status, body,
//! `Content-Type` and `Location`.
//!
//! What is stored: 2xx and 4xx responses of the inner service (terminal outcomes, a declined card
//! included); a 5xx means the side effect may have started, so the record is kept for the next
//! request to resume (the inner service finds the [`Lease`] and the [`Scope`] in the request's
//! extensions and can reconcile before acting). Requests the layer refuses before the inner
//! service store nothing. The inner service can override the choice by putting a
//! [`Disposition`] in its response's extensions: `Forget` for a validation error found only
//! inside the handler, `Completed` when it completed the record in its own database transaction.
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tollgate_http::idempotency::IdempotencyLayer;
//! use tollgate_idempotency::memory::MemoryStore;
//! use tollgate_idempotency::{Idempotency, IdempotencyConfig};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! let charges = Arc::new(AtomicU32::new(0));
//! let counter = Arc::clone(&charges);
//! let pay = service_fn(move |_req: Request<Full<Bytes>>| {
//!     let n = counter.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         let mut response = Response::new(Full::new(Bytes::from(format!("txn_{n}"))));
//!         *response.status_mut() = StatusCode::CREATED;
//!         Ok::<_, std::convert::Infallible>(response)
//!     }
//! });
//! let driver = Arc::new(Idempotency::new(MemoryStore::new(10_000), IdempotencyConfig::default()));
//! let layer = IdempotencyLayer::new(driver, |_req: &Request<Full<Bytes>>| {
//!     Some(("alice".to_owned(), "/api/v1/payments".to_owned()))
//! });
//! let service = layer.layer(pay);
//!
//! let request = || {
//!     Request::post("/api/v1/payments")
//!         .header("idempotency-key", "order-7c1f0e9a2b4d4e11")
//!         .body(Full::new(Bytes::from_static(br#"{"amount":"9.99"}"#)))
//!         .unwrap()
//! };
//! let first = service.clone().oneshot(request()).await.unwrap();
//! let again = service.clone().oneshot(request()).await.unwrap();
//! assert_eq!((first.status(), again.status()), (StatusCode::CREATED, StatusCode::CREATED));
//! assert_eq!(first.headers()["idempotent-replayed"], "false");
//! assert_eq!(again.headers()["idempotent-replayed"], "true");
//! assert_eq!(charges.load(Ordering::SeqCst), 1);
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use tollgate_idempotency::fingerprint::Fingerprint;
use tollgate_idempotency::store::{IdempotencyStore, Lease, StoredResponse};
use tollgate_idempotency::{Error, HandlerResult, Idempotency, IdempotencyKey, Outcome, Scope};
use tower::{Layer, Service, ServiceExt};

use crate::problem::Problem;

/// `Idempotent-Replayed`.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The default request-body limit: 64 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// What the layer does with the inner service's response; put one in the response's extensions
/// to override the default (2xx/4xx → `Store`, 5xx → `Ambiguous`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// A terminal outcome: store it and replay it for the TTL.
    Store,
    /// Refused before any side effect (a validation error): answer, store nothing, free the key.
    Forget,
    /// The side effect may have started: keep the record so the next request resumes it.
    Ambiguous,
    /// The inner service already completed the record with the [`Lease`]'s fence inside its own
    /// transaction (`PostgresStore::complete_in`): answer, write nothing more.
    Completed,
}

/// Put in the extensions of a response answered because the idempotency store failed: the
/// store's own message, for your logs (clients get a fixed one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreFailure(pub String);

/// Who is asking and which route this is: `(user, route template)`, or `None` to pass the
/// request through untouched (for example an unauthenticated one, which auth will refuse).
type Identify<B> = Arc<dyn Fn(&Request<B>) -> Option<(String, String)> + Send + Sync>;

/// Adds [`IdempotencyService`] around a service.
pub struct IdempotencyLayer<St, B> {
    driver: Arc<Idempotency<St>>,
    identify: Identify<B>,
    body_limit: usize,
}

impl<St, B> Clone for IdempotencyLayer<St, B> {
    fn clone(&self) -> Self {
        IdempotencyLayer {
            driver: Arc::clone(&self.driver),
            identify: Arc::clone(&self.identify),
            body_limit: self.body_limit,
        }
    }
}

impl<St: fmt::Debug, B> fmt::Debug for IdempotencyLayer<St, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("driver", &self.driver)
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

impl<St, B> IdempotencyLayer<St, B> {
    /// Runs requests through `driver`, scoped by what `identify` says of each.
    pub fn new(
        driver: Arc<Idempotency<St>>,
        identify: impl Fn(&Request<B>) -> Option<(String, String)> + Send + Sync + 'static,
    ) -> Self {
        IdempotencyLayer {
            driver,
            identify: Arc::new(identify),
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }

    /// The largest request body accepted (larger: 413).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }
}

impl<S, St, B> Layer<S> for IdempotencyLayer<St, B> {
    type Service = IdempotencyService<S, St, B>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The idempotency service.
pub struct IdempotencyService<S, St, B> {
    inner: S,
    layer: IdempotencyLayer<St, B>,
}

impl<S: Clone, St, B> Clone for IdempotencyService<S, St, B> {
    fn clone(&self) -> Self {
        IdempotencyService {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, St, B> fmt::Debug for IdempotencyService<S, St, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

fn problem_bytes(status: StatusCode, title: &str, detail: impl Into<String>) -> Response<Bytes> {
    Problem::new(status, title).detail(detail).into_response()
}

fn full(response: Response<Bytes>) -> Response<Full<Bytes>> {
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, Full::new(body))
}

fn problem(status: StatusCode, title: &str, detail: impl Into<String>) -> Response<Full<Bytes>> {
    full(problem_bytes(status, title, detail))
}

/// A response produced here, as it would be stored.
fn stored(response: Response<Bytes>) -> StoredResponse {
    StoredResponse {
        status: response.status().as_u16(),
        headers: kept_headers(response.headers()),
        body: response.into_body(),
    }
}

/// The headers a stored response keeps for its replays: `Content-Type` and `Location`. A
/// handler that completes the record itself ([`Disposition::Completed`]) stores these, so its
/// replays match the layer's.
pub fn kept_headers(headers: &http::HeaderMap) -> Vec<(String, String)> {
    [CONTENT_TYPE, LOCATION]
        .iter()
        .filter_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            Some((name.as_str().to_owned(), value.to_owned()))
        })
        .collect()
}

/// The problem response for a driver error.
fn error_response(error: &Error) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let title = status.canonical_reason().unwrap_or("Error");
    // A store's own message can name hosts and tables: clients get a fixed one.
    let detail = match error {
        Error::Store { .. } => {
            "the idempotency store is unavailable; retry with the same Idempotency-Key".to_owned()
        }
        other => other.to_string(),
    };
    let mut response = problem(status, title, detail);
    if let Error::Store { .. } = error {
        response
            .extensions_mut()
            .insert(StoreFailure(error.to_string()));
    }
    if let Some(wait) = error.retry_after() {
        let secs = wait.as_millis().div_ceil(1000).max(1);
        if let Ok(value) = HeaderValue::try_from(secs.to_string()) {
            response.headers_mut().insert(RETRY_AFTER, value);
        }
    } else if error.status() == 503 {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn replay(stored: StoredResponse, replayed: bool) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(stored.body));
    *response.status_mut() =
        StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in stored.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    let flag = if replayed { "true" } else { "false" };
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static(flag));
    response
}

impl<S, St, B, R> Service<Request<B>> for IdempotencyService<S, St, B>
where
    S: Service<Request<Full<Bytes>>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: fmt::Display + Send,
    St: IdempotencyStore + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: std::error::Error + Send + Sync + 'static,
    R: Body + Send + 'static,
    R::Data: Send,
    R::Error: fmt::Display,
{
    type Response = Response<Full<Bytes>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let identity = (self.layer.identify)(&request);
        let layer = self.layer.clone();
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = match Limited::new(body, layer.body_limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                    let detail =
                        format!("the request body is larger than {} bytes", layer.body_limit);
                    return Ok(problem(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "Payload Too Large",
                        detail,
                    ));
                }
                Err(error) => {
                    return Ok(problem(
                        StatusCode::BAD_REQUEST,
                        "Bad Request",
                        format!("unreadable body: {error}"),
                    ));
                }
            };
            let request = Request::from_parts(parts, Full::new(body.clone()));
            let Some((user, route)) = identity else {
                // Not ours to make idempotent: pass the answer through as it is.
                let response = inner.oneshot(request).await?;
                let (parts, body) = response.into_parts();
                return Ok(match body.collect().await {
                    Ok(collected) => Response::from_parts(parts, Full::new(collected.to_bytes())),
                    Err(error) => problem(
                        StatusCode::BAD_GATEWAY,
                        "Bad Gateway",
                        format!("response body failed: {error}"),
                    ),
                });
            };
            let key = match IdempotencyKey::from_headers(request.headers()) {
                Ok(key) => key,
                Err(error) => return Ok(error_response(&Error::Key(error))),
            };
            let fingerprint = match Fingerprint::of_json(request.method(), &route, &body) {
                Ok(fingerprint) => fingerprint,
                Err(error) => return Ok(error_response(&error)),
            };
            let scope = Scope::new(user, request.method(), &route, key);
            let scope_for_handler = scope.clone();
            let mut inner_error = None;
            let error_slot = &mut inner_error;
            // The live answer keeps every header the handler set (`Retry-After`, …); only
            // `Content-Type` and `Location` are stored for replays.
            let mut live_headers = http::HeaderMap::new();
            let headers_slot = &mut live_headers;
            let outcome = layer
                .driver
                .run(&scope, &fingerprint, |lease: Lease| async move {
                    let mut request = request;
                    request.extensions_mut().insert(lease);
                    request.extensions_mut().insert(scope_for_handler);
                    match inner.oneshot(request).await {
                        Ok(response) => match collect_response(response).await {
                            Ok((result, headers)) => {
                                *headers_slot = headers;
                                result
                            }
                            Err(failed) => HandlerResult::Ambiguous(stored(failed)),
                        },
                        Err(error) => {
                            let detail = format!("the request failed: {error}");
                            *error_slot = Some(error);
                            HandlerResult::Ambiguous(stored(problem_bytes(
                                StatusCode::BAD_GATEWAY,
                                "Bad Gateway",
                                detail,
                            )))
                        }
                    }
                })
                .await;
            if let Some(error) = inner_error {
                return Err(error);
            }
            Ok(match outcome {
                Ok(Outcome::Executed(stored)) => {
                    let mut response = replay(stored, false);
                    for (name, value) in &live_headers {
                        if !response.headers().contains_key(name) {
                            response.headers_mut().append(name, value.clone());
                        }
                    }
                    response
                }
                Ok(Outcome::Replayed(stored)) => replay(stored, true),
                Err(error) => error_response(&error),
            })
        })
    }
}

/// The response as it will be kept (status, `Content-Type`, `Location`, body bytes) and what to
/// do with it. A body that fails midway becomes a 502 problem.
async fn collect_response<R>(
    response: Response<R>,
) -> Result<(HandlerResult, http::HeaderMap), Response<Bytes>>
where
    R: Body,
    R::Error: fmt::Display,
{
    let (parts, body) = response.into_parts();
    let disposition = parts.extensions.get::<Disposition>().copied();
    let body = body
        .collect()
        .await
        .map_err(|e| {
            problem_bytes(
                StatusCode::BAD_GATEWAY,
                "Bad Gateway",
                format!("response body failed: {e}"),
            )
        })?
        .to_bytes();
    let stored = StoredResponse {
        status: parts.status.as_u16(),
        headers: kept_headers(&parts.headers),
        body,
    };
    let result = match disposition {
        Some(Disposition::Store) => HandlerResult::Store(stored),
        Some(Disposition::Forget) => HandlerResult::Forget(stored),
        Some(Disposition::Ambiguous) => HandlerResult::Ambiguous(stored),
        Some(Disposition::Completed) => HandlerResult::Completed(stored),
        None if stored.status >= 500 => HandlerResult::Ambiguous(stored),
        None => HandlerResult::Store(stored),
    };
    Ok((result, parts.headers))
}
