//! The middleware against a scripted HTTP server, on a manual clock: waits take no time and are
//! measured exactly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use reqwest_middleware::ClientWithMiddleware;
use tollgate_reqwest::{Attempts, Error, Failure, IdempotencyKey, RetryMiddleware};
use tollgate_retry::backoff::{Backoff, Jitter};
use tollgate_retry::breaker::{BreakerConfig, Window};
use tollgate_retry::budget::RetryBudget;
use tollgate_retry::clock::ManualClock;
use tollgate_retry::config::RetryConfig;
use tollgate_retry::retry::RetryPolicy;
use tollgate_retry::retry_after::RetryAfterBounds;

/// One request as the server saw it: method and idempotency key.
type Seen = Arc<Mutex<Vec<(Method, Option<String>)>>>;

/// A server that answers each request with the next scripted status (and `Retry-After`, if
/// given), repeating the last one; returns its address and what it saw.
async fn scripted(script: Vec<(u16, Option<String>)>) -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let handler = move |method: Method, headers: HeaderMap| {
        let log = Arc::clone(&log);
        let script = script.clone();
        async move {
            let key = headers
                .get("idempotency-key")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let n = {
                let mut log = log.lock();
                log.push((method, key));
                log.len() - 1
            };
            let (status, after) = script[n.min(script.len() - 1)].clone();
            let status = StatusCode::from_u16(status).expect("a status");
            match after {
                Some(after) => (status, [("retry-after", after)]).into_response(),
                None => status.into_response(),
            }
        }
    };
    let app = axum::Router::new().route("/pay", axum::routing::any(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let address = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, seen)
}

fn statuses(statuses: &[u16]) -> Vec<(u16, Option<String>)> {
    statuses.iter().map(|&status| (status, None)).collect()
}

fn fixed_policy() -> RetryPolicy {
    RetryPolicy::new(Backoff::constant(Duration::from_millis(100)).jitter(Jitter::None))
        .max_attempts(4)
}

fn on_clock(middleware: RetryMiddleware, clock: &ManualClock) -> ClientWithMiddleware {
    let middleware = middleware.clock(Arc::new(clock.clone()), Arc::new(clock.clone()));
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build()
}

async fn pay(client: &ClientWithMiddleware, address: SocketAddr) -> reqwest::Response {
    client
        .post(format!("http://{address}/pay"))
        .body("{}")
        .send()
        .await
        .expect("an answer")
}

fn attempts(response: &reqwest::Response) -> u32 {
    response.extensions().get::<Attempts>().expect("attempts").0
}

#[tokio::test]
async fn a_post_gets_one_uuidv7_key_that_every_retry_repeats() {
    let (address, seen) = scripted(statuses(&[503, 500, 201])).await;
    let clock = ManualClock::new();
    let client = on_clock(RetryMiddleware::new(fixed_policy()), &clock);
    let response = pay(&client, address).await;
    assert_eq!(response.status(), 201);
    assert_eq!(attempts(&response), 3);
    let seen = seen.lock();
    let key = seen[0].1.clone().expect("a key");
    assert!(seen.iter().all(|(_, k)| k.as_deref() == Some(key.as_str())));
    let uuid = uuid::Uuid::parse_str(&key).expect("a UUID");
    assert_eq!(uuid.get_version_num(), 7);
    let answered = response.extensions().get::<IdempotencyKey>();
    assert_eq!(answered, Some(&IdempotencyKey(key)));
    assert_eq!(clock.elapsed(), Duration::from_millis(200));
}

#[tokio::test]
async fn a_callers_key_is_never_replaced() {
    let (address, seen) = scripted(statuses(&[503, 201])).await;
    let client = on_clock(RetryMiddleware::new(fixed_policy()), &ManualClock::new());
    let response = client
        .post(format!("http://{address}/pay"))
        .header("Idempotency-Key", "order-7c1f0e9a2b4d4e11")
        .body("{}")
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 201);
    let keys: Vec<_> = seen.lock().iter().map(|(_, key)| key.clone()).collect();
    let chosen = Some("order-7c1f0e9a2b4d4e11".to_owned());
    assert_eq!(keys, [chosen.clone(), chosen]);
}

#[tokio::test]
async fn final_answers_are_never_retried() {
    for status in [400, 401, 403, 404, 422, 409] {
        let (address, seen) = scripted(statuses(&[status, 201])).await;
        let client = on_clock(RetryMiddleware::new(fixed_policy()), &ManualClock::new());
        let response = pay(&client, address).await;
        assert_eq!(response.status(), status);
        assert_eq!(attempts(&response), 1, "{status}");
        assert_eq!(seen.lock().len(), 1, "{status}");
    }
}

#[tokio::test]
async fn retry_after_is_obeyed_in_seconds_or_as_a_date_and_capped() {
    let date = httpdate_in(Duration::from_secs(30));
    let script = vec![
        (429, Some("7".to_owned())),
        (409, Some("2".to_owned())), // the same key still in progress
        (503, Some(date)),
        (503, Some("3600".to_owned())),
        (201, None),
    ];
    let (address, seen) = scripted(script).await;
    let clock = ManualClock::new();
    let policy = fixed_policy()
        .max_attempts(5)
        .retry_after(RetryAfterBounds::new(
            Duration::ZERO,
            Duration::from_secs(60),
        ));
    let client = on_clock(RetryMiddleware::new(policy), &clock);
    let response = pay(&client, address).await;
    assert_eq!(response.status(), 201);
    assert_eq!(seen.lock().len(), 5);
    // 7 s + 2 s + the date (30 s away, give or take the second it is rounded to) + 60 s cap.
    let waited = clock.elapsed().as_secs();
    assert!((98..=99).contains(&waited), "{waited}");
}

fn httpdate_in(from_now: Duration) -> String {
    let at = SystemTime::now() + from_now;
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    // RFC 9110 IMF-fixdate, computed here to keep the test free of a date crate.
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let (year, month, day) = civil_from_days(days as i64);
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][month as usize - 1];
    format!("{weekday}, {day:02} {month} {year} {h:02}:{m:02}:{s:02} GMT")
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[tokio::test]
async fn without_a_key_a_post_is_sent_exactly_once_and_a_get_is_retried() {
    let (address, seen) = scripted(statuses(&[503, 200])).await;
    let middleware = RetryMiddleware::new(fixed_policy()).generate_keys(false);
    let client = on_clock(middleware, &ManualClock::new());
    let response = pay(&client, address).await;
    assert_eq!(response.status(), 503);
    assert_eq!(seen.lock().clone(), [(Method::POST, None)]);

    let (address, seen) = scripted(statuses(&[503, 200])).await;
    let response = client
        .get(format!("http://{address}/pay"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 200);
    assert_eq!(seen.lock().len(), 2);
}

#[tokio::test]
async fn transport_errors_are_retried_and_notify_hears_each() {
    // A port nobody listens on: every attempt fails to connect.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = closed.local_addr().expect("an address");
    drop(closed);
    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&heard);
    let middleware = RetryMiddleware::new(fixed_policy()).notify(move |event| {
        let connect = matches!(event.failure, Failure::Error(error) if error.is_connect());
        log.lock()
            .push((event.attempt, event.delay, connect, event.key.is_some()));
    });
    let client = on_clock(middleware, &ManualClock::new());
    let result = client
        .post(format!("http://{address}/pay"))
        .body("{}")
        .send()
        .await;
    assert!(result.expect_err("no server").is_connect());
    let delay = Duration::from_millis(100);
    assert_eq!(
        *heard.lock(),
        [
            (1, delay, true, true),
            (2, delay, true, true),
            (3, delay, true, true)
        ]
    );
}

#[tokio::test]
async fn a_status_is_reported_to_notify() {
    let (address, _seen) = scripted(statuses(&[502, 201])).await;
    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&heard);
    let middleware = RetryMiddleware::new(fixed_policy()).notify(move |event| {
        if let Failure::Status(status) = event.failure {
            log.lock().push(status.as_u16());
        }
    });
    let response = pay(&on_clock(middleware, &ManualClock::new()), address).await;
    assert_eq!(response.status(), 201);
    assert_eq!(*heard.lock(), [502]);
}

#[tokio::test]
async fn the_budget_is_shared_by_every_request_of_a_client() {
    let (address, seen) = scripted(statuses(&[503])).await;
    // Room for exactly two retries, refunded only by successes (there are none).
    let policy = fixed_policy().budget(RetryBudget::quota(10, 5, 10, 1));
    let client = on_clock(RetryMiddleware::new(policy), &ManualClock::new());
    let first = pay(&client, address).await;
    assert_eq!(attempts(&first), 3);
    let second = pay(&client, address).await;
    assert_eq!(attempts(&second), 1, "the budget is spent");
    assert_eq!(seen.lock().len(), 4);
}

#[tokio::test]
async fn a_hosts_breaker_opens_and_refuses_without_sending() {
    let (address, seen) = scripted(statuses(&[503])).await;
    let breaker = BreakerConfig::default()
        .window(Window::Count(4))
        .minimum_calls(4)
        .failure_rate_threshold(50)
        .wait_in_open(Duration::from_secs(30));
    let middleware = RetryMiddleware::new(fixed_policy()).breaker_per_host(breaker);
    let client = on_clock(middleware, &ManualClock::new());
    assert_eq!(pay(&client, address).await.status(), 503);
    assert_eq!(seen.lock().len(), 4);
    let refused = client
        .post(format!("http://{address}/pay"))
        .body("{}")
        .send()
        .await
        .expect_err("the breaker is open");
    let reqwest_middleware::Error::Middleware(error) = refused else {
        panic!("a middleware error: {refused:?}");
    };
    let error = error
        .downcast_ref::<Error>()
        .expect("tollgate_reqwest::Error");
    assert!(
        matches!(error, Error::CircuitOpen { retry_after, .. } if *retry_after == Duration::from_secs(30))
    );
    assert_eq!(seen.lock().len(), 4, "nothing was sent");
}

#[tokio::test]
async fn it_configures_itself_from_the_published_policy() {
    let mut published = RetryConfig::default();
    published.max_attempts = 2;
    published.retryable_statuses = vec![503];
    let body = serde_json::to_string(&published).expect("json");
    let app = axum::Router::new().route(
        "/api/v1/retry-config",
        axum::routing::get(move || async move {
            Response::builder()
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .expect("a response")
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let config_address = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let middleware = RetryMiddleware::from_server(
        &reqwest::Client::new(),
        &format!("http://{config_address}/"),
    )
    .await
    .expect("the published policy");
    let client = on_clock(middleware, &ManualClock::new());
    let (address, seen) = scripted(statuses(&[503])).await;
    assert_eq!(attempts(&pay(&client, address).await), 2);
    let (address, _) = scripted(statuses(&[502, 201])).await;
    assert_eq!(
        pay(&client, address).await.status(),
        502,
        "502 is not in the list"
    );
    assert_eq!(seen.lock().len(), 2);

    let missing =
        RetryMiddleware::from_server(&reqwest::Client::new(), &format!("http://{address}"))
            .await
            .expect_err("no policy there");
    assert!(matches!(missing, Error::Fetch { .. }));
}
