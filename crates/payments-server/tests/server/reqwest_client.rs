//! A Rust service paying through `tollgate-reqwest`, against the real server on Redis and
//! PostgreSQL, charging through a `mock-processor` that loses answers and fails calls.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use http::Extensions;
use parking_lot::Mutex;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use tollgate_reqwest::{Attempts, IdempotencyKey, RetryMiddleware};
use tollgate_retry::backoff::Backoff;
use tollgate_retry::retry::RetryPolicy;

use crate::processor::MockProcessor;
use crate::support::{ALICE, Isolated, Server, free_port, payment, unique};

/// A request's method and idempotency key.
type MethodAndKey = (String, Option<String>);

/// Each request as it left the client (after the retry middleware).
#[derive(Clone, Default)]
struct Sent(Arc<Mutex<Vec<MethodAndKey>>>);

#[async_trait::async_trait]
impl Middleware for Sent {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let key = request
            .headers()
            .get("idempotency-key")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        self.0.lock().push((request.method().to_string(), key));
        next.run(request, extensions).await
    }
}

/// 500 payments from 16 tasks, keys made by the middleware: with 20 % of the processor's
/// answers lost and 10 % of its calls failing, every payment ends `201`, processor charges =
/// payment rows = keys, and every POST that left the client carried a key.
#[test]
fn paying_through_tollgate_reqwest_charges_each_payment_once() {
    let Some(services) = Isolated::new("paying_through_tollgate_reqwest_charges_each_payment_once")
    else {
        return;
    };
    let faults = ["--lose-rate", "0.2", "--fail-rate", "0.1", "--seed", "32"];
    let processor = MockProcessor::start(free_port(), &faults);
    // One processor attempt per request: the server answers a lost or failed charge `502`
    // (pending), so the faults reach the client, whose retry with the same key completes it.
    let config = "[[policy]]\nname = \"payments\"\nscope = \"user\"\nalgorithm = \"sliding-window\"\n\
                  limit = 1000000\nwindow = \"1m\"\nendpoint = \"POST /api/v1/payments\"\n\
                  [processor]\nmax_attempts = 1\n";
    let options = services
        .options()
        .env("PROCESSOR_URL", &processor.url())
        .toml(config);
    let server = Server::start(&options);
    let base = format!("http://127.0.0.1:{}", server.port);

    let sent = Sent::default();
    let retries = Arc::new(Mutex::new(0_u32));
    let heard = Arc::clone(&retries);
    let policy = RetryPolicy::new(Backoff::exponential(
        Duration::from_millis(10),
        Duration::from_millis(200),
    ))
    .max_attempts(20);
    let retry = RetryMiddleware::new(policy).notify(move |_| *heard.lock() += 1);
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(retry)
        .with(sent.clone())
        .build();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let answers: Vec<(u16, String, u32)> = runtime.block_on(async {
        let tasks: Vec<_> = (0..16)
            .map(|task| tokio::spawn(pay_many(client.clone(), base.clone(), task)))
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.extend(task.await.expect("a task"));
        }
        answers
    });

    assert_eq!(answers.len(), 500);
    for (status, key, attempts) in &answers {
        assert_eq!(*status, 201, "{key} after {attempts} attempts");
    }
    let keys: BTreeSet<&String> = answers.iter().map(|(_, key, _)| key).collect();
    assert_eq!(keys.len(), 500, "one key per payment");
    let (charges, requests) = processor.stats();
    assert_eq!(charges, 500, "one charge per key");
    assert_eq!(
        services.count("SELECT count(*) FROM {schema}.payments"),
        500
    );

    let sent = sent.0.lock();
    let mut per_key: BTreeMap<&str, u32> = BTreeMap::new();
    for (method, key) in sent.iter() {
        assert_eq!(method, "POST");
        let key = key.as_deref().expect("every POST carries a key");
        *per_key.entry(key).or_default() += 1;
    }
    let attempts: u32 = answers.iter().map(|(_, _, attempts)| attempts).sum();
    assert_eq!(
        attempts as usize,
        sent.len(),
        "Attempts counts what was sent"
    );
    assert_eq!(per_key.len(), 500);
    let retried = *retries.lock();
    assert!(retried > 0, "the faults reached the client");
    eprintln!(
        "tollgate-reqwest: 500 payments, {} requests sent ({retried} retries), {charges} charges, {requests} processor requests",
        sent.len()
    );
}

/// One task's share of the 500 payments, paid one after another; (status, key, attempts) each.
async fn pay_many(
    client: ClientWithMiddleware,
    base: String,
    task: usize,
) -> Vec<(u16, String, u32)> {
    let count = 500 / 16 + usize::from(task < 500 % 16);
    let mut answers = Vec::with_capacity(count);
    for n in 0..count {
        let body = payment("25.00", "card").replace("ord_1", &unique(&format!("ord_{task}_{n}")));
        let response = client
            .post(format!("{base}/api/v1/payments"))
            .bearer_auth(ALICE)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("an answer");
        let key = response
            .extensions()
            .get::<IdempotencyKey>()
            .map(|key| key.0.clone())
            .expect("the key");
        let attempts = response.extensions().get::<Attempts>().map_or(0, |a| a.0);
        answers.push((response.status().as_u16(), key, attempts));
    }
    answers
}
