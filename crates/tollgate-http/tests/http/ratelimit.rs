use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tollgate_http::RequestHead;
use tollgate_http::ratelimit::{RateLimitDecision, RateLimitLayer, RateLimited, Subject};
use tollgate_ratelimit::{
    Algorithm, Decision, Error, MemoryLimiter, Policy, PolicyKey, PolicySet, RateLimiter, Scope,
};
use tower::{Layer, ServiceExt, service_fn};

fn policies() -> PolicySet {
    PolicySet::new([Policy::new(
        "per-user",
        Scope::User,
        Algorithm::sliding_log(2, Duration::from_secs(60)),
    )
    .expect("valid")])
    .expect("valid")
}

fn by_user(request: &RequestHead<'_>) -> Subject {
    Subject {
        user: request
            .headers()
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        ..Subject::default()
    }
}

#[tokio::test]
async fn denied_requests_never_reach_the_service() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let app = service_fn(move |_req: Request<()>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, std::convert::Infallible>(Response::new(Bytes::from_static(b"ok"))) }
    });
    let service =
        RateLimitLayer::new(Arc::new(MemoryLimiter::new()), policies(), by_user).layer(app);
    let request = |user: &str| {
        Request::get("/")
            .header("x-user", user)
            .body(())
            .expect("request")
    };

    let first = service
        .clone()
        .oneshot(request("alice"))
        .await
        .expect("response");
    assert_eq!(first.headers()["x-ratelimit-limit"], "2");
    assert_eq!(first.headers()["x-ratelimit-remaining"], "1");
    assert_eq!(first.headers()["ratelimit"], "\"per-user\";r=1;t=60");
    service
        .clone()
        .oneshot(request("alice"))
        .await
        .expect("response");
    let denied = service
        .clone()
        .oneshot(request("alice"))
        .await
        .expect("response");
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        denied
            .extensions()
            .get::<RateLimited>()
            .map(|r| r.policy.as_str()),
        Some("per-user")
    );
    assert_eq!(denied.headers()["content-type"], "application/problem+json");
    assert_eq!(denied.headers()["retry-after"], "60");
    let body: serde_json::Value = serde_json::from_slice(denied.body()).expect("json");
    assert_eq!(body["policy"], "per-user");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the third request was answered by the layer"
    );

    // Bob has his own quota; anonymous requests have no per-user key at all.
    let bob = service
        .clone()
        .oneshot(request("bob"))
        .await
        .expect("response");
    assert_eq!(bob.status(), StatusCode::OK);
    let anonymous = service
        .clone()
        .oneshot(Request::get("/").body(()).expect("request"))
        .await
        .expect("response");
    assert_eq!(anonymous.status(), StatusCode::OK);
    assert!(!anonymous.headers().contains_key("x-ratelimit-limit"));
}

/// A limiter whose backend is down and configured to say so.
#[derive(Debug)]
struct Unavailable;

impl RateLimiter for Unavailable {
    async fn check<'k>(&self, _: &'k [PolicyKey], _: u64) -> Result<Decision<'k>, Error> {
        Err(Error::Backend {
            source: "connection refused".into(),
            transient: true,
        })
    }
    async fn peek<'k>(&self, keys: &'k [PolicyKey], cost: u64) -> Result<Decision<'k>, Error> {
        self.check(keys, cost).await
    }
    async fn refund(&self, _: &[PolicyKey], _: u64) -> Result<(), Error> {
        Ok(())
    }
    async fn reset(&self, _: &[PolicyKey]) -> Result<(), Error> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_limiter_answers_503_problem_json() {
    let app = service_fn(|_req: Request<()>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Bytes::from_static(b"ok")))
    });
    let service = RateLimitLayer::new(Arc::new(Unavailable), policies(), by_user).layer(app);
    let response = service
        .oneshot(
            Request::get("/")
                .header("x-user", "alice")
                .body(())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

/// A per-request cost from the head, and a custom answer to a denied request that still
/// carries the rate-limit headers, `Retry-After` and `RateLimited`.
#[tokio::test]
async fn requests_cost_what_the_layer_says_and_denials_can_be_custom() {
    let policies = PolicySet::new([Policy::new(
        "items",
        Scope::User,
        Algorithm::sliding_window(10, Duration::from_secs(60)),
    )
    .expect("valid")])
    .expect("valid");
    let app = service_fn(|_req: Request<()>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Bytes::from_static(b"ok")))
    });
    let service = RateLimitLayer::new(Arc::new(MemoryLimiter::new()), policies, by_user)
        .cost(|head: &RequestHead<'_>| {
            head.headers()
                .get("x-items")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(1)
        })
        .on_limited(|denied| {
            let mut response = Response::new(Bytes::from(format!(
                "slow down: {} (again in {} s)",
                denied.policy,
                denied.retry_after.as_secs()
            )));
            *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            response
        })
        .layer(app);
    let batch = |items: u64| {
        Request::post("/batch")
            .header("x-user", "alice")
            .header("x-items", items.to_string())
            .body(())
            .expect("request")
    };
    let first = service.clone().oneshot(batch(4)).await.expect("response");
    assert_eq!(first.headers()["x-ratelimit-remaining"], "6");
    let decided = first
        .extensions()
        .get::<RateLimitDecision>()
        .expect("a decision");
    assert!(decided.allowed);
    assert_eq!(decided.policy.as_ref().map(|p| p.name()), Some("items"));
    let second = service.clone().oneshot(batch(4)).await.expect("response");
    assert_eq!(second.headers()["x-ratelimit-remaining"], "2");
    let denied = service.clone().oneshot(batch(4)).await.expect("response");
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        denied.body().starts_with(b"slow down: items (again in "),
        "{denied:?}"
    );
    assert!(denied.headers().contains_key("retry-after"));
    assert_eq!(
        denied.headers()["x-ratelimit-remaining"],
        "2",
        "a denial consumes nothing"
    );
    assert_eq!(
        denied
            .extensions()
            .get::<RateLimited>()
            .map(|r| r.policy.as_str()),
        Some("items")
    );
    let decided = denied
        .extensions()
        .get::<RateLimitDecision>()
        .expect("a decision");
    assert!(!decided.allowed);
    let fits = service.clone().oneshot(batch(2)).await.expect("response");
    assert_eq!(fits.status(), StatusCode::OK);
}
