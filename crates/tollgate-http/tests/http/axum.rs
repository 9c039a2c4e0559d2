//! Both layers on an axum `Router`, over a real socket: the route template comes from
//! `MatchedPath`, the client address from `ConnectInfo`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tollgate_http::RequestHead;
use tollgate_http::idempotency::{IdempotencyLayer, IdempotencyOutcome, Identity};
use tollgate_http::ratelimit::{RateLimitLayer, Subject};
use tollgate_idempotency::memory::MemoryStore;
use tollgate_idempotency::{Idempotency, IdempotencyConfig};
use tollgate_ratelimit::{Algorithm, MemoryLimiter, Policy, PolicySet, Scope};

const TEMPLATE: &str = "/orders/{order}/payments";

/// `METHOD /route/template` of a request the router matched.
fn endpoint(head: &RequestHead<'_>) -> Option<String> {
    let path = head.extensions().get::<MatchedPath>()?;
    Some(format!("{} {}", head.method(), path.as_str()))
}

async fn pay(State(calls): State<Arc<AtomicU32>>, body: Bytes) -> impl IntoResponse {
    let n = calls.fetch_add(1, Ordering::SeqCst);
    if body.as_ref().windows(4).any(|w| w == b"slow") {
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "application/json".parse().expect("value"));
    headers.insert(
        "location",
        format!("/payments/txn_{n}").parse().expect("value"),
    );
    (
        StatusCode::CREATED,
        headers,
        format!("{{\"id\":\"txn_{n}\"}}"),
    )
}

/// The app on a real port; the handler's call count.
async fn serve() -> (SocketAddr, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let per_ip = Policy::new(
        "per-ip",
        Scope::Ip,
        Algorithm::sliding_window(6, Duration::from_secs(60)),
    )
    .expect("valid")
    .for_endpoint(&format!("POST {TEMPLATE}"));
    let limits = RateLimitLayer::new(
        Arc::new(MemoryLimiter::new()),
        PolicySet::new([per_ip]).expect("valid"),
        |head: &RequestHead<'_>| Subject {
            ip: head
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
            endpoint: endpoint(head),
            ..Subject::default()
        },
    );
    let config = IdempotencyConfig::default().wait(Duration::from_millis(50));
    let driver = Arc::new(Idempotency::new(MemoryStore::new(1_000), config));
    let idempotency = IdempotencyLayer::new(driver, |head: &RequestHead<'_>| {
        let user = head.headers().get("x-user")?.to_str().ok()?;
        let route = head.extensions().get::<MatchedPath>()?;
        Some(Identity::new(user, route.as_str()))
    });
    let app = Router::new()
        .route(TEMPLATE, post(pay))
        .route_layer(idempotency)
        .route_layer(limits)
        .with_state(Arc::clone(&calls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service).await.expect("serve");
    });
    (addr, calls)
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

async fn post_payment(addr: SocketAddr, path: &str, key: &str, body: &'static str) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("x-user", "alice")
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("request");
    let response = client.request(request).await.expect("an answer");
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_layers_on_an_axum_router_over_a_real_socket() {
    let (addr, calls) = serve().await;
    let path = "/orders/o1/payments";
    let key = "order-7c1f0e9a2b4d4e11";

    let first = post_payment(addr, path, key, r#"{"amount":"1.00"}"#).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.headers["idempotent-replayed"], "false");
    assert_eq!(first.headers["ratelimit-policy"], "\"per-ip\";q=6;w=60");
    assert_eq!(first.headers["x-ratelimit-remaining"], "5");

    let replay = post_payment(addr, path, key, r#"{ "amount": "1.00" }"#).await;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.headers["location"], first.headers["location"]);
    assert_eq!(replay.body, first.body);

    let mismatch = post_payment(addr, path, key, r#"{"amount":"2.00"}"#).await;
    assert_eq!(mismatch.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(mismatch.headers["content-type"], "application/problem+json");

    let slow_key = "order-slow-0000000001";
    let owner = tokio::spawn(post_payment(addr, path, slow_key, r#"{"slow":true}"#));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let duplicate = post_payment(addr, path, slow_key, r#"{"slow":true}"#).await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    assert!(duplicate.headers.contains_key("retry-after"));
    assert_eq!(owner.await.expect("owner").status, StatusCode::CREATED);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one call per key");

    // Another order's path has the same template: it counts against the same limit, so the
    // seventh request from this address is refused, whatever its path.
    let other = post_payment(addr, "/orders/o2/payments", "order-other-00000001", "{}").await;
    assert_eq!(other.status, StatusCode::CREATED);
    assert_eq!(other.headers["x-ratelimit-remaining"], "0");
    let limited = post_payment(addr, "/orders/o3/payments", "order-other-00000002", "{}").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers.contains_key("retry-after"));
    let problem: serde_json::Value = serde_json::from_slice(&limited.body).expect("json");
    assert_eq!(problem["policy"], "per-ip");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "the refused request never ran"
    );
}

/// The typed facts reach a middleware outside the layers, as axum sees them.
#[tokio::test]
async fn outer_middleware_reads_the_outcome() {
    use tower::ServiceExt;
    let driver = Arc::new(Idempotency::new(
        MemoryStore::new(10),
        IdempotencyConfig::default(),
    ));
    let app: Router = Router::new()
        .route("/pay", post(|| async { (StatusCode::CREATED, "paid") }))
        .route_layer(IdempotencyLayer::new(driver, |_: &RequestHead<'_>| {
            Some(Identity::new("alice", "/pay"))
        }));
    let request = || {
        http::Request::post("/pay")
            .header("idempotency-key", "order-7c1f0e9a2b4d4e11")
            .body(axum::body::Body::from("{}"))
            .expect("request")
    };
    let first = app.clone().oneshot(request()).await.expect("response");
    let again = app.oneshot(request()).await.expect("response");
    assert_eq!(
        first.extensions().get(),
        Some(&IdempotencyOutcome::Executed)
    );
    assert_eq!(
        again.extensions().get(),
        Some(&IdempotencyOutcome::Replayed)
    );
}
