//! [`RateLimitService`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use tollgate_ratelimit::{DynRateLimiter, RateLimiter, RequestContext, headers};
use tower::Service;

use super::layer::{Denied, RateLimitLayer};
use super::{RateLimitDecision, RateLimited};
use crate::RequestHead;
use crate::future::ResponseFuture;
use crate::problem::{CONTENT_TYPE_PROBLEM, Problem};

/// The rate-limiting service; clones share the limiter (and so the limits).
pub struct RateLimitService<S, L: ?Sized = dyn DynRateLimiter> {
    pub(super) inner: S,
    pub(super) layer: RateLimitLayer<L>,
}

impl<S: Clone, L: ?Sized> Clone for RateLimitService<S, L> {
    fn clone(&self) -> Self {
        RateLimitService {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, L: RateLimiter + ?Sized> fmt::Debug for RateLimitService<S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitService")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

fn with_body<R: From<Bytes>>(response: Response<Bytes>) -> Response<R> {
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, R::from(body))
}

/// The `429` body: a problem with the policy and the wait. Typed rather than a [`Problem`]
/// map: a flood of 429s answers this for every request. Members in the order a [`Problem`]
/// writes them (sorted), so both spell a refusal alike.
#[derive(serde::Serialize)]
struct TooManyRequests<'a> {
    detail: String,
    policy: &'a str,
    retry_after_seconds: u64,
    status: u16,
    title: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// The `429` for a request `policy` denied, to retry after `wait`.
fn too_many_requests<R: From<Bytes>>(policy: String, wait: Option<Duration>) -> Response<R> {
    let wait = wait.map_or(1, |d| headers::ceil_secs(d).max(1));
    let body = TooManyRequests {
        detail: format!("rate limit `{policy}` exceeded; retry in {wait} s"),
        policy: &policy,
        retry_after_seconds: wait,
        status: StatusCode::TOO_MANY_REQUESTS.as_u16(),
        title: "Too Many Requests",
        kind: "about:blank",
    };
    let mut response = Response::new(R::from(Bytes::from(
        serde_json::to_vec(&body).unwrap_or_default(),
    )));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_PROBLEM));
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

impl<S, L, B, R> Service<Request<B>> for RateLimitService<S, L>
where
    L: RateLimiter + ?Sized + 'static,
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
        let head = RequestHead::of(&request);
        let subject = self.layer.extractor.subject(&head);
        let cost = self.layer.cost.as_ref().map_or(1, |cost| cost(&head));
        let on_limited = self.layer.on_limited.clone();
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
            let decision = match limiter.check(&keys, cost).await {
                Ok(decision) => decision,
                Err(error) => return Ok(limiter_unavailable(&error)),
            };
            let pairs: Vec<(HeaderName, HeaderValue)> = headers::to_pairs(&decision);
            let decided = RateLimitDecision {
                policy: decision.binding().map(|b| Arc::clone(b.policy())),
                allowed: decision.is_allowed(),
            };
            let denied_by = (!decision.is_allowed())
                .then(|| decision.binding().map(|b| b.policy().name().to_owned()))
                .flatten();
            let mut response = match (denied_by, on_limited) {
                (Some(policy), None) => too_many_requests(policy, decision.retry_after()),
                (Some(policy), Some(respond)) => {
                    let retry_after = decision.retry_after().map_or(1, headers::ceil_secs).max(1);
                    let mut response = with_body(respond(&Denied {
                        policy: &policy,
                        retry_after: Duration::from_secs(retry_after),
                    }));
                    response
                        .headers_mut()
                        .insert(RETRY_AFTER, HeaderValue::from(retry_after));
                    response.extensions_mut().insert(RateLimited { policy });
                    response
                }
                (None, _) => inner.call(request).await?,
            };
            for (name, value) in pairs {
                response.headers_mut().insert(name, value);
            }
            response.extensions_mut().insert(decided);
            Ok(response)
        });
        ResponseFuture { inner }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typed_429_is_the_problem_a_map_would_write() {
        let typed: Response<Bytes> =
            too_many_requests("per-user".to_owned(), Some(Duration::from_millis(1_500)));
        let mapped = Problem::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
            .detail("rate limit `per-user` exceeded; retry in 2 s")
            .extension("policy", "per-user")
            .extension("retry_after_seconds", 2)
            .into_response();
        assert_eq!(typed.status(), mapped.status());
        assert_eq!(typed.headers(), mapped.headers());
        assert_eq!(typed.body(), mapped.body());
        assert_eq!(
            typed
                .extensions()
                .get::<RateLimited>()
                .map(|r| r.policy.as_str()),
            Some("per-user")
        );
    }
}
