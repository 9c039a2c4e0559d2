//! [`RateLimitService`].

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use tollgate_ratelimit::{headers, RequestContext};
use tower::Service;

use super::layer::RateLimitLayer;
use super::RateLimited;
use crate::future::ResponseFuture;
use crate::problem::Problem;
use crate::RequestHead;

/// The rate-limiting service; clones share the limiter (and so the limits).
#[derive(Clone, Debug)]
pub struct RateLimitService<S> {
    pub(super) inner: S,
    pub(super) layer: RateLimitLayer,
}

fn with_body<R: From<Bytes>>(response: Response<Bytes>) -> Response<R> {
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, R::from(body))
}

/// The `429` for a request `policy` denied, to retry after `wait`.
fn too_many_requests<R: From<Bytes>>(policy: String, wait: Option<Duration>) -> Response<R> {
    let wait = wait.map_or(1, |d| headers::ceil_secs(d).max(1));
    let mut response = with_body(
        Problem::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
            .detail(format!("rate limit `{policy}` exceeded; retry in {wait} s"))
            .extension("policy", policy.as_str())
            .extension("retry_after_seconds", wait)
            .into_response(),
    );
    response.extensions_mut().insert(RateLimited { policy });
    response
}

/// The `503` for a limiter that failed.
fn limiter_unavailable<R: From<Bytes>>(error: &tollgate_ratelimit::Error) -> Response<R> {
    let mut response = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
        .detail(format!("the rate limiter is unavailable: {error}"))
        .into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    with_body(response)
}

impl<S, B, R> Service<Request<B>> for RateLimitService<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Send + 'static,
    R: From<Bytes> + Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = ResponseFuture<Response<R>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let subject = self.layer.extractor.subject(&RequestHead::of(&request));
        let mut ctx = RequestContext::new();
        if let Some(user) = &subject.user {
            ctx = ctx.user(user);
        }
        if let Some(ip) = subject.ip {
            ctx = ctx.ip(ip);
        }
        if let Some(endpoint) = &subject.endpoint {
            ctx = ctx.endpoint(endpoint);
        }
        let keys = self.layer.policies.keys_for(&ctx);
        let limiter = Arc::clone(&self.layer.limiter);
        // The service polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let inner = Box::pin(async move {
            let decision = match limiter.check(&keys, 1).await {
                Ok(decision) => decision,
                Err(error) => return Ok(limiter_unavailable(&error)),
            };
            let pairs: Vec<(HeaderName, HeaderValue)> = headers::to_pairs(&decision);
            let denied_by = (!decision.is_allowed())
                .then(|| decision.binding().map(|b| b.policy().name().to_owned()))
                .flatten();
            let mut response = match denied_by {
                Some(policy) => too_many_requests(policy, decision.retry_after()),
                None => inner.call(request).await?,
            };
            for (name, value) in pairs {
                response.headers_mut().insert(name, value);
            }
            Ok(response)
        });
        ResponseFuture { inner }
    }
}
