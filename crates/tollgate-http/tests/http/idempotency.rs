use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tollgate_http::RequestHead;
use tollgate_http::idempotency::{IdempotencyLayer, IdempotencyOutcome, Identity, RequestBody};
use tollgate_idempotency::memory::MemoryStore;
use tollgate_idempotency::store::Lease;
use tollgate_idempotency::{Idempotency, IdempotencyConfig};
use tower::{Layer, ServiceExt, service_fn};

type Req = Request<Full<Bytes>>;
/// What the layer's inner service receives.
type Inner = Request<RequestBody>;

const KEY: &str = "order-7c1f0e9a2b4d4e11";

fn request(key: Option<&str>, body: &'static [u8]) -> Req {
    let mut builder = Request::post("/api/v1/payments");
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    builder
        .body(Full::new(Bytes::from_static(body)))
        .expect("request")
}

/// `request` through a clone of `svc`, which must answer.
async fn send<S, R>(svc: &S, request: R) -> S::Response
where
    S: tower::Service<R> + Clone,
    S::Error: std::fmt::Debug,
{
    svc.clone().oneshot(request).await.expect("response")
}

async fn body_json(response: Response<Full<Bytes>>) -> serde_json::Value {
    use http_body_util::BodyExt;
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    serde_json::from_slice(&bytes).expect("json")
}

/// A payment service that answers `status` and counts calls; it sleeps `delay` first.
fn service(
    status: StatusCode,
    delay: Duration,
    wait: Duration,
) -> (
    impl tower::Service<
        Req,
        Response = Response<Full<Bytes>>,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone,
    Arc<AtomicU32>,
    Arc<AtomicU32>,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let resumed = Arc::new(AtomicU32::new(0));
    let (c, r) = (Arc::clone(&calls), Arc::clone(&resumed));
    let app = service_fn(move |req: Inner| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        if req.extensions().get::<Lease>().is_some_and(|l| l.resumed) {
            r.fetch_add(1, Ordering::SeqCst);
        }
        async move {
            tokio::time::sleep(delay).await;
            let mut response = Response::new(Full::new(Bytes::from(format!(
                "{{\"transaction_id\":\"txn_{n}\"}}"
            ))));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().expect("value"));
            response.headers_mut().insert(
                "location",
                format!("/api/v1/payments/txn_{n}").parse().expect("value"),
            );
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let config = IdempotencyConfig::default().wait(wait);
    let driver = Arc::new(Idempotency::new(MemoryStore::new(1_000), config));
    let layer = IdempotencyLayer::new(driver, |req: &RequestHead<'_>| {
        (req.uri().path() != "/anonymous").then(|| Identity::new("alice", "/api/v1/payments"))
    })
    .body_limit(64);
    (layer.layer(app), calls, resumed)
}

#[tokio::test]
async fn replays_and_refusals() {
    let (svc, calls, _) = service(StatusCode::CREATED, Duration::ZERO, Duration::from_secs(1));
    let first = send(&svc, request(Some(KEY), br#"{"amount":"1.00"}"#)).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(first.headers()["idempotent-replayed"], "false");
    assert_eq!(
        first.extensions().get(),
        Some(&IdempotencyOutcome::Executed)
    );
    let replay = send(&svc, request(Some(KEY), br#"{ "amount" : "1.00" }"#)).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(
        replay.extensions().get(),
        Some(&IdempotencyOutcome::Replayed)
    );
    assert_eq!(replay.headers()["location"], "/api/v1/payments/txn_0");
    assert_eq!(body_json(replay).await["transaction_id"], "txn_0");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let cases: [(Option<&str>, &'static [u8], StatusCode, IdempotencyOutcome); 5] = [
        (None, b"{}", StatusCode::BAD_REQUEST, IdempotencyOutcome::InvalidKey),
        (Some("short"), b"{}", StatusCode::BAD_REQUEST, IdempotencyOutcome::InvalidKey),
        (
            Some(KEY),
            br#"{"amount":"2.00"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            IdempotencyOutcome::Mismatch,
        ),
        (
            Some("another-key-0123456789"),
            b"{not json",
            StatusCode::BAD_REQUEST,
            IdempotencyOutcome::InvalidBody,
        ),
        (
            Some("another-key-0123456789"),
            b"{\"padding\":\"0123456789012345678901234567890123456789012345678901234567890123456789\"}",
            StatusCode::PAYLOAD_TOO_LARGE,
            IdempotencyOutcome::BodyTooLarge,
        ),
    ];
    for (key, body, status, outcome) in cases {
        let response = send(&svc, request(key, body)).await;
        assert_eq!(response.status(), status, "{key:?}");
        assert_eq!(response.extensions().get(), Some(&outcome), "{key:?}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        assert_eq!(body_json(response).await["status"], status.as_u16());
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "refused requests never reach the service"
    );

    // Routes the identify function does not scope pass straight through, untouched.
    let passthrough = svc
        .oneshot(
            Request::post("/anonymous")
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("response");
    assert!(!passthrough.headers().contains_key("idempotent-replayed"));
    assert!(
        passthrough
            .extensions()
            .get::<IdempotencyOutcome>()
            .is_none()
    );
    assert_eq!(passthrough.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_in_flight_gets_409_with_retry_after() {
    let (svc, calls, _) = service(
        StatusCode::CREATED,
        Duration::from_millis(300),
        Duration::from_millis(20),
    );
    let first = tokio::spawn(svc.clone().oneshot(request(Some(KEY), b"{}")));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let duplicate = send(&svc, request(Some(KEY), b"{}")).await;
    assert_eq!(duplicate.status(), StatusCode::CONFLICT);
    assert_eq!(
        duplicate.extensions().get(),
        Some(&IdempotencyOutcome::Conflict)
    );
    assert!(duplicate.headers().contains_key("retry-after"));
    assert_eq!(
        first.await.expect("task").expect("response").status(),
        StatusCode::CREATED
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_server_error_is_resumed_not_replayed() {
    let (svc, calls, resumed) = service(
        StatusCode::BAD_GATEWAY,
        Duration::ZERO,
        Duration::from_secs(1),
    );
    let first = send(&svc, request(Some(KEY), b"{}")).await;
    assert_eq!(first.status(), StatusCode::BAD_GATEWAY);
    let retry = send(&svc, request(Some(KEY), b"{}")).await;
    assert_eq!(retry.headers()["idempotent-replayed"], "false", "ran again");
    assert_eq!(
        (calls.load(Ordering::SeqCst), resumed.load(Ordering::SeqCst)),
        (2, 1),
        "the retry knew it resumed"
    );
}

/// The handler decides: `Forget` frees the key for a corrected request, `Completed` makes the
/// layer write nothing (the handler completed the record itself), and the live answer keeps
/// every header the handler set while replays keep only what was stored.
#[tokio::test]
async fn the_handler_can_choose_the_disposition() {
    use std::sync::atomic::AtomicBool;
    use tollgate_http::idempotency::Disposition;
    use tollgate_idempotency::Scope;
    use tollgate_idempotency::store::{IdempotencyStore, StoredResponse};

    let store = Arc::new(MemoryStore::new(100));
    let driver = Arc::new(Idempotency::new(
        Arc::clone(&store),
        IdempotencyConfig::default(),
    ));
    let forget_next = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&forget_next);
    let handler_store = Arc::clone(&store);
    let app = service_fn(move |req: Inner| {
        let forget = flag.swap(false, Ordering::SeqCst);
        let store = Arc::clone(&handler_store);
        async move {
            let lease = *req.extensions().get::<Lease>().expect("a lease");
            let scope: Scope = req.extensions().get::<Scope>().expect("the scope").clone();
            let (status, disposition) = if forget {
                (StatusCode::UNPROCESSABLE_ENTITY, Disposition::Forget)
            } else {
                // What a handler with its own transaction does: complete, then say so.
                let stored = StoredResponse {
                    status: 201,
                    headers: vec![],
                    body: Bytes::from_static(b"done"),
                };
                store
                    .complete(&scope, lease.fence, &stored, Duration::from_secs(60))
                    .await
                    .expect("completes");
                (StatusCode::CREATED, Disposition::Completed)
            };
            let mut response = Response::new(Full::new(Bytes::from_static(b"done")));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert("x-trace", http::HeaderValue::from_static("live"));
            response.extensions_mut().insert(disposition);
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let svc = IdempotencyLayer::new(driver, |_req: &RequestHead<'_>| {
        Some(Identity::new("alice", "/api/v1/payments"))
    })
    .layer(app);

    let refused = send(&svc, request(Some(KEY), b"{}")).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.headers()["x-trace"], "live");
    // Forgotten: the same key runs the handler again, which completes the record itself.
    let done = send(&svc, request(Some(KEY), b"{}")).await;
    assert_eq!(done.status(), StatusCode::CREATED);
    assert_eq!(done.headers()["idempotent-replayed"], "false");
    assert_eq!(done.headers()["x-trace"], "live");
    let replay = send(&svc, request(Some(KEY), b"{}")).await;
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(
        replay.extensions().get(),
        Some(&IdempotencyOutcome::Replayed)
    );
    assert!(
        !replay.headers().contains_key("x-trace"),
        "only stored headers are replayed"
    );
}

/// An owner that outlives its lease (a long pause) cannot store its result: the retry that took
/// the key over answers, and the stale owner gets 409 with `IdempotencyOutcome::Fenced`.
#[tokio::test]
async fn a_stale_owner_cannot_store_its_result() {
    use tollgate_idempotency::clock::ManualClock;
    let clock = ManualClock::new();
    let store = MemoryStore::with_clock(100, Arc::new(clock.clone()));
    let config = IdempotencyConfig::default().wait(Duration::ZERO).claim(
        tollgate_idempotency::store::ClaimOptions::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
        ),
    );
    let driver = Arc::new(
        Idempotency::new(store, config)
            .with_clock(Arc::new(clock.clone()), Arc::new(clock.clone())),
    );
    let (release, released) = tokio::sync::watch::channel(false);
    let app = service_fn(move |req: Inner| {
        let resumed = req.extensions().get::<Lease>().is_some_and(|l| l.resumed);
        let mut released = released.clone();
        async move {
            if !resumed {
                // The first owner stalls until the test lets it go.
                let _ = released.wait_for(|go| *go).await;
            }
            let mut response = Response::new(Full::new(Bytes::from(if resumed {
                "takeover"
            } else {
                "stale"
            })));
            *response.status_mut() = StatusCode::CREATED;
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let svc = IdempotencyLayer::new(driver, |_req: &RequestHead<'_>| {
        Some(Identity::new("alice", "/api/v1/payments"))
    })
    .layer(app);
    let stale = tokio::spawn(svc.clone().oneshot(request(Some(KEY), b"{}")));
    tokio::task::yield_now().await;
    clock.advance(Duration::from_secs(2));
    let takeover = send(&svc, request(Some(KEY), b"{}")).await;
    assert_eq!(takeover.status(), StatusCode::CREATED);
    release.send(true).expect("the stale owner listens");
    let stale = stale.await.expect("task").expect("response");
    assert_eq!(stale.status(), StatusCode::CONFLICT);
    assert_eq!(stale.extensions().get(), Some(&IdempotencyOutcome::Fenced));
    let replay = svc
        .oneshot(request(Some(KEY), b"{}"))
        .await
        .expect("response");
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(body_text(replay).await, "takeover");
}

async fn body_text(response: Response<Full<Bytes>>) -> String {
    use http_body_util::BodyExt;
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A form-encoded API with Stripe-style keys: any printable key, fields in any order are one
/// request, a changed field is another (422), and a chosen response header is replayed too.
#[tokio::test]
async fn stripe_style_keys_form_bodies_and_replayed_headers() {
    use tollgate_idempotency::fingerprint::BodyFormat;
    use tollgate_idempotency::key::KeyPolicy;

    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let app = service_fn(move |_req: Inner| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut response = Response::new(Full::new(Bytes::from_static(b"{\"id\":\"ch_1\"}")));
            *response.status_mut() = StatusCode::CREATED;
            let headers = response.headers_mut();
            headers.insert("content-type", "application/json".parse().expect("value"));
            headers.insert("x-charge-attempt", n.to_string().parse().expect("value"));
            headers.insert("x-not-kept", "live only".parse().expect("value"));
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let driver = Arc::new(Idempotency::new(
        MemoryStore::new(100),
        IdempotencyConfig::default(),
    ));
    let identify = |_: &RequestHead<'_>| Some(Identity::new("acct_1", "/v1/charges"));
    let service = IdempotencyLayer::new(driver, identify)
        .key_policy(KeyPolicy::STRIPE)
        .body_format(BodyFormat::Form)
        .replay_headers([
            http::header::CONTENT_TYPE,
            http::HeaderName::from_static("x-charge-attempt"),
        ])
        .layer(app);
    let charge = |key: &str, body: &'static [u8]| {
        Request::post("/v1/charges")
            .header("idempotency-key", key)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from_static(body)))
            .expect("request")
    };
    let key = "order #42, retry";
    let first = send(
        &service,
        charge(key, b"amount=2000&currency=usd&description=a+b"),
    )
    .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(first.headers()["x-not-kept"], "live only");
    let replay = send(
        &service,
        charge(key, b"description=a%20b&currency=usd&amount=2000"),
    )
    .await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(
        replay.headers()["x-charge-attempt"],
        "0",
        "a kept header replays"
    );
    assert!(!replay.headers().contains_key("x-not-kept"));
    let changed = send(
        &service,
        charge(key, b"amount=2001&currency=usd&description=a+b"),
    )
    .await;
    assert_eq!(changed.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A claim hook that claims with the store itself (as a PostgreSQL hook would in one statement
/// with its own insert) and tells the handler what it wrote.
#[derive(Debug)]
struct Intent(&'static str);

struct ClaimingHook {
    store: Arc<MemoryStore>,
    claims: Arc<AtomicU32>,
}

impl tollgate_http::idempotency::ClaimHook for ClaimingHook {
    fn claim(
        &self,
        request: tollgate_http::idempotency::ClaimRequest<'_>,
    ) -> tollgate_http::idempotency::ClaimFuture {
        use tollgate_idempotency::store::{Claim, IdempotencyStore};
        // Declines a body it does not understand: the layer claims as usual.
        if request.body.as_ref() != br#"{"amount":"1.00"}"# {
            return Box::pin(async { Ok(None) });
        }
        let (store, claims) = (Arc::clone(&self.store), Arc::clone(&self.claims));
        let (scope, fingerprint, options) =
            (request.scope.clone(), *request.fingerprint, request.options);
        Box::pin(async move {
            match store.claim(&scope, &fingerprint, options).await? {
                Claim::Acquired(lease) if !lease.resumed => {
                    claims.fetch_add(1, Ordering::SeqCst);
                    let mut extensions = http::Extensions::new();
                    extensions.insert(Arc::new(Intent("recorded by the hook")));
                    Ok(Some(tollgate_http::idempotency::Claimed {
                        lease,
                        extensions,
                    }))
                }
                // A real hook's statement writes nothing when the key has a record.
                _ => Ok(None),
            }
        })
    }
}

#[tokio::test]
async fn a_claim_hook_claims_fresh_keys_and_the_layer_does_the_rest() {
    let store = Arc::new(MemoryStore::new(100));
    let claims = Arc::new(AtomicU32::new(0));
    let driver = Arc::new(Idempotency::new(
        Arc::clone(&store),
        IdempotencyConfig::default(),
    ));
    let hook = ClaimingHook {
        store,
        claims: Arc::clone(&claims),
    };
    let seen = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&seen);
    let app = service_fn(move |req: Inner| {
        let told = req.extensions().get::<Arc<Intent>>().map(|i| i.0);
        if told.is_some() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        async move {
            let mut response = Response::new(Full::new(Bytes::from(told.unwrap_or("none"))));
            *response.status_mut() = StatusCode::CREATED;
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let layer = IdempotencyLayer::new(driver, |_: &RequestHead<'_>| {
        Some(Identity::new("alice", "/api/v1/payments"))
    })
    .claim_hook(hook);
    let service = layer.layer(app);

    let first = service
        .clone()
        .oneshot(request(Some(KEY), br#"{"amount":"1.00"}"#))
        .await
        .expect("an answer");
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(
        first.extensions().get(),
        Some(&IdempotencyOutcome::Executed)
    );
    let again = service
        .clone()
        .oneshot(request(Some(KEY), br#"{"amount":"1.00"}"#))
        .await
        .expect("an answer");
    assert_eq!(
        again.extensions().get(),
        Some(&IdempotencyOutcome::Replayed)
    );
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let declined = service
        .clone()
        .oneshot(request(
            Some("order-declined-by-hook"),
            br#"{"amount":"2.00"}"#,
        ))
        .await
        .expect("an answer");
    assert_eq!(
        declined.extensions().get(),
        Some(&IdempotencyOutcome::Executed)
    );
    let reused = service
        .clone()
        .oneshot(request(Some(KEY), br#"{"amount":"9.00"}"#))
        .await
        .expect("an answer");
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        (claims.load(Ordering::SeqCst), seen.load(Ordering::SeqCst)),
        (1, 1),
        "the hook claimed the fresh key once and the handler was told"
    );
}

/// A body that sends one chunk and then never ends: a layer that buffered it would wait forever.
struct Endless {
    sent: bool,
}

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.sent {
            return std::task::Poll::Pending;
        }
        self.get_mut().sent = true;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
            b"first chunk",
        )))))
    }
}

#[tokio::test]
async fn a_request_passed_through_is_not_read_by_the_layer() {
    use http_body_util::BodyExt;
    let driver = Arc::new(Idempotency::new(
        MemoryStore::new(10),
        IdempotencyConfig::default(),
    ));
    // Only POSTs are made idempotent.
    let layer = IdempotencyLayer::new(driver, |head: &RequestHead<'_>| {
        (head.method() == http::Method::POST).then(|| Identity::new("alice", "/uploads"))
    });
    let app = service_fn(|req: Inner| async move {
        let mut body = req.into_body();
        assert!(!body.was_read(), "handed on unread");
        let first = body.frame().await.expect("a frame").expect("data");
        let chunk = first.into_data().unwrap_or_default();
        Ok::<_, std::convert::Infallible>(Response::new(Full::new(chunk)))
    });
    let request = Request::get("/uploads/7")
        .body(Endless { sent: false })
        .expect("request");
    let answer = tokio::time::timeout(Duration::from_secs(5), layer.layer(app).oneshot(request))
        .await
        .expect("answered without waiting for the body's end")
        .expect("an answer");
    assert_eq!(body_text(answer).await, "first chunk");
}
