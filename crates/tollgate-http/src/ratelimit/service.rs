//! [`RateLimitService`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use tollgate_ratelimit::shadow::would_deny;
use tollgate_ratelimit::{DynRateLimiter, RateLimiter, RequestContext};
use tower::{Layer, Service};

use super::headers;
use super::layer::{Denied, RateLimitLayer};
use super::{RateLimitDecision, RateLimited, Subject};
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

/// The `429` body: a problem with the policy and the wait, members in the order a [`Problem`]
/// writes them (sorted), so both spell a refusal alike. Written by hand: a flood of 429s
/// answers this for every request, and a policy name needs no JSON escaping (names are
/// validated to `[A-Za-z0-9_.-]`; anything else goes through serde).
fn too_many_requests_body(policy: &str, wait: u64) -> Vec<u8> {
    let plain = policy
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !plain {
        let detail = format!("rate limit `{policy}` exceeded; retry in {wait} s");
        let problem = Problem::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
            .detail(detail)
            .extension("policy", policy)
            .extension("retry_after_seconds", wait);
        return serde_json::to_vec(&problem.to_json()).unwrap_or_default();
    }
    let mut digits = itoa::Buffer::new();
    let wait = digits.format(wait);
    let mut body = Vec::with_capacity(2 * policy.len() + 2 * wait.len() + 150);
    for part in [
        "{\"detail\":\"rate limit `",
        policy,
        "` exceeded; retry in ",
        wait,
        " s\",\"policy\":\"",
        policy,
        "\",\"retry_after_seconds\":",
        wait,
        ",\"status\":429,\"title\":\"Too Many Requests\",\"type\":\"about:blank\"}",
    ] {
        body.extend_from_slice(part.as_bytes());
    }
    body
}

/// The `429` for a request `policy` denied, to retry after `wait`, with room in its header map
/// for the rate-limit headers and what the layers outside add (one allocation, no regrowth).
fn too_many_requests<R: From<Bytes>>(policy: String, wait: Option<Duration>) -> Response<R> {
    let wait = wait.map_or(1, crate::retry_after::seconds);
    let body = Bytes::from(too_many_requests_body(&policy, wait));
    let mut response = Response::new(R::from(body));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    headers.reserve(12);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_PROBLEM));
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
        let dimensions: Vec<(&str, &str)> = subject
            .dimensions
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let ctx = context(&subject, &dimensions);
        let (keys, shadow_keys) = self
            .layer
            .policies
            .with_current(|set| (set.keys_for(&ctx), set.shadow_keys_for(&ctx)));
        let limiter = Arc::clone(&self.layer.limiter);
        // The service polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let inner = Box::pin(async move {
            let decision = match limiter.check(&keys, cost).await {
                Ok(decision) => decision,
                Err(error) => return Ok(limiter_unavailable(&error)),
            };
            let would_deny = if decision.is_allowed() && !shadow_keys.is_empty() {
                would_deny(&*limiter, &shadow_keys, cost)
                    .await
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            let decided = RateLimitDecision {
                policy: decision.binding().map(|b| Arc::clone(b.policy())),
                allowed: decision.is_allowed(),
                would_deny,
            };
            let denied_by = (!decision.is_allowed())
                .then(|| decision.binding().map(|b| b.policy().name().to_owned()))
                .flatten();
            let mut response = match (denied_by, on_limited) {
                (Some(policy), None) => too_many_requests(policy, decision.retry_after()),
                (Some(policy), Some(respond)) => {
                    let retry_after = decision
                        .retry_after()
                        .map_or(1, crate::retry_after::seconds);
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
            // Written into the answer's own map: no list of pairs to build and move.
            headers::write(&decision, response.headers_mut());
            response.extensions_mut().insert(decided);
            Ok(response)
        });
        ResponseFuture { inner }
    }
}

/// The limiter's view of `subject`, borrowing its `dimensions` as pairs of `&str`.
fn context<'a>(subject: &'a Subject, dimensions: &'a [(&'a str, &'a str)]) -> RequestContext<'a> {
    let mut ctx = RequestContext::new().dimensions(dimensions);
    if let Some(user) = &subject.user {
        ctx = ctx.user(user);
    }
    if let Some(ip) = subject.ip {
        ctx = ctx.ip(ip);
    }
    if let Some(endpoint) = &subject.endpoint {
        ctx = ctx.endpoint(endpoint);
    }
    if let Some(tier) = &subject.tier {
        ctx = ctx.tier(tier);
    }
    ctx
}

impl<S, L: ?Sized> Layer<S> for RateLimitLayer<L> {
    type Service = RateLimitService<S, L>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            layer: self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hand_written_body_is_what_serde_writes_for_any_name() {
        for policy in ["per-user", "a.b_c-9", "quo\"te", "back`tick\\", "é"] {
            let mapped = Problem::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
                .detail(format!("rate limit `{policy}` exceeded; retry in 17 s"))
                .extension("policy", policy)
                .extension("retry_after_seconds", 17)
                .into_response();
            let written = too_many_requests_body(policy, 17);
            assert_eq!(&written[..], &mapped.body()[..], "{policy}");
        }
    }

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
