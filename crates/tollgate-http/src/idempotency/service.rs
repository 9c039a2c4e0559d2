//! [`IdempotencyService`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::HeaderName;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use tollgate_idempotency::fingerprint::Fingerprint;
use tollgate_idempotency::store::{IdempotencyStore, Lease};
use tollgate_idempotency::{Error, HandlerResult, Idempotency, IdempotencyKey, Outcome, Scope};
use tower::{Layer, Service, ServiceExt};

use super::body::RequestBody;
use super::claim_hook::{ClaimRequest, SharedHook};
use super::identity::Identity;
use super::layer::IdempotencyLayer;
use super::outcome::{Disposition, IdempotencyOutcome};
use super::response::{error_response, first_answer, kept, problem_bytes, refusal, replay, stored};
use crate::RequestHead;
use crate::future::ResponseFuture;
use tollgate_idempotency::store::StoredResponse;

/// The idempotency service.
pub struct IdempotencyService<S, St> {
    pub(super) inner: S,
    pub(super) layer: IdempotencyLayer<St>,
}

impl<S: Clone, St> Clone for IdempotencyService<S, St> {
    fn clone(&self) -> Self {
        IdempotencyService {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, St> fmt::Debug for IdempotencyService<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

type Answer = Response<Full<Bytes>>;

impl<S, St, B, R> Service<Request<B>> for IdempotencyService<S, St>
where
    S: Service<Request<RequestBody>, Response = Response<R>> + Clone + Send + 'static,
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
    type Response = Answer;
    type Error = S::Error;
    type Future = ResponseFuture<Answer, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let identity = self.layer.identify.identity(&RequestHead::of(&request));
        let layer = self.layer.clone();
        // The service polled ready is the one that must be called.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let Some(identity) = identity else {
            // Not ours: the body goes on unread.
            let request = request.map(RequestBody::passed);
            return ResponseFuture {
                inner: Box::pin(pass_through(inner, request)),
            };
        };
        ResponseFuture {
            inner: Box::pin(handle(layer, inner, request, identity)),
        }
    }
}

/// Reads the body (bounded) and runs the request at most once.
async fn handle<S, St, B, R>(
    layer: IdempotencyLayer<St>,
    inner: S,
    request: Request<B>,
    identity: Identity,
) -> Result<Answer, S::Error>
where
    S: Service<Request<RequestBody>, Response = Response<R>>,
    S::Error: fmt::Display,
    St: IdempotencyStore + 'static,
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
    R: Body,
    R::Error: fmt::Display,
{
    let (parts, body) = request.into_parts();
    let body = match read_body(body, layer.body_limit).await {
        Ok(body) => body,
        Err(refused) => return Ok(refused),
    };
    let request = Request::from_parts(parts, RequestBody::read(body.clone()));
    let key = match IdempotencyKey::from_headers_with(request.headers(), &layer.key_policy) {
        Ok(key) => key,
        Err(error) => return Ok(error_response(&Error::Key(error))),
    };
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let fingerprint = match Fingerprint::of(
        request.method(),
        &identity.route,
        content_type,
        &body,
        layer.body_format,
    ) {
        Ok(fingerprint) => fingerprint,
        Err(error) => return Ok(error_response(&error)),
    };
    let scope = Scope::new(identity.user, request.method(), &identity.route, key);
    let mut request = request;
    let claimed = match &layer.claim_hook {
        Some(SharedHook(hook)) => {
            let asked = ClaimRequest {
                head: RequestHead::of(&request),
                body: &body,
                scope: &scope,
                fingerprint: &fingerprint,
                options: layer.driver.config().claim,
            };
            match hook.claim(asked).await {
                Ok(Some(claimed)) => {
                    request.extensions_mut().extend(claimed.extensions);
                    Some(claimed.lease)
                }
                Ok(None) => None,
                Err(error) => return Ok(error_response(&error)),
            }
        }
        None => None,
    };
    let keep = Arc::clone(&layer.replay_headers);
    run_once(
        &layer.driver,
        (scope, fingerprint, claimed),
        inner,
        request,
        keep,
    )
    .await
}

async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, Answer>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload Too Large",
            format!("the request body is larger than {limit} bytes"),
            IdempotencyOutcome::BodyTooLarge,
        )),
        Err(error) => Err(refusal(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            format!("unreadable body: {error}"),
            IdempotencyOutcome::InvalidBody,
        )),
    }
}

/// Not ours to make idempotent: the inner service's answer as it is.
async fn pass_through<S, R>(inner: S, request: Request<RequestBody>) -> Result<Answer, S::Error>
where
    S: Service<Request<RequestBody>, Response = Response<R>>,
    R: Body,
    R::Error: fmt::Display,
{
    let (parts, body) = inner.oneshot(request).await?.into_parts();
    Ok(match body.collect().await {
        Ok(collected) => Response::from_parts(parts, Full::new(collected.to_bytes())),
        Err(error) => {
            let (parts, body) = problem_bytes(
                StatusCode::BAD_GATEWAY,
                "Bad Gateway",
                format!("response body failed: {error}"),
            )
            .into_parts();
            Response::from_parts(parts, Full::new(body))
        }
    })
}

/// Lets the driver decide: run the inner service once (this request owns the key), replay, or
/// refuse.
async fn run_once<S, St, R>(
    driver: &Idempotency<St>,
    (scope, fingerprint, claimed): (Scope, Fingerprint, Option<Lease>),
    inner: S,
    request: Request<RequestBody>,
    keep: Arc<[HeaderName]>,
) -> Result<Answer, S::Error>
where
    S: Service<Request<RequestBody>, Response = Response<R>>,
    S::Error: fmt::Display,
    St: IdempotencyStore + 'static,
    R: Body,
    R::Error: fmt::Display,
{
    let mut inner_error = None;
    // The live answer keeps every header and extension the inner service set; only those in
    // `keep` (`Content-Type` and `Location` unless the layer says otherwise) are stored.
    let mut live = None;
    let handler_scope = scope.clone();
    let (error_slot, live_slot) = (&mut inner_error, &mut live);
    let handler = |lease: Lease| async move {
        let mut request = request;
        request.extensions_mut().insert(lease);
        request.extensions_mut().insert(handler_scope);
        match inner.oneshot(request).await {
            Ok(response) => match collect_response(response, &keep).await {
                Ok((result, parts)) => {
                    *live_slot = Some(parts);
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
    };
    let outcome = match claimed {
        // The hook wrote the claim with the handler's first write.
        Some(lease) => driver.run_claimed(&scope, lease, handler).await,
        None => driver.run(&scope, &fingerprint, handler).await,
    };
    if let Some(error) = inner_error {
        return Err(error);
    }
    Ok(match outcome {
        Ok(Outcome::Executed(stored)) => executed(stored, live),
        Ok(Outcome::Replayed(stored)) => replay(stored, true),
        Err(error) => error_response(&error),
    })
}

/// The answer of an execution. With the inner service's head at hand, that head and the stored
/// body: the status is the one stored, and the headers stored are taken from it. Without it
/// (the inner service failed, so the stored answer is the layer's own), the stored answer.
fn executed(stored: StoredResponse, live: Option<http::response::Parts>) -> Answer {
    match live {
        Some(parts) => first_answer(stored, parts),
        None => replay(stored, false),
    }
}

/// The response as it will be kept (status, `Content-Type`, `Location`, body bytes), what to
/// do with it, and its head. A body that fails midway becomes a 502 problem.
async fn collect_response<R>(
    response: Response<R>,
    keep: &[HeaderName],
) -> Result<(HandlerResult, http::response::Parts), Response<Bytes>>
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
        headers: kept(&parts.headers, keep),
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
    Ok((result, parts))
}

impl<S, St> Layer<S> for IdempotencyLayer<St> {
    type Service = IdempotencyService<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService {
            inner,
            layer: self.clone(),
        }
    }
}
