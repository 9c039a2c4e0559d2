//! Driving a server: the request mix, latencies, and the report.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{Args, BoxError, Scenario};

pub(crate) type HttpClient =
    Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// One answer.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    pub(crate) user: usize,
    pub(crate) key: Arc<str>,
    pub(crate) status: u16,
    pub(crate) replayed: Option<bool>,
    pub(crate) transaction_id: Option<String>,
    pub(crate) body_hash: u64,
}

/// What one load run measured.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) elapsed: Duration,
    pub(crate) latency: Histogram<u64>,
    pub(crate) samples: Vec<Sample>,
    pub(crate) errors: u64,
}

pub(crate) fn body_for(amount_cents: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"amount": "{}.{:02}", "currency": "USD", "payment_method": "card", "description": "load", "metadata": {{"source": "tollgate-load"}}}}"#,
        amount_cents / 100,
        amount_cents % 100
    ))
}

fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

async fn pay(
    client: &HttpClient,
    base: &str,
    user: usize,
    key: &Arc<str>,
    body: Bytes,
) -> Result<(Sample, Duration), BoxError> {
    let request = hyper::Request::post(format!("{base}/api/v1/payments"))
        .header("authorization", format!("Bearer tollgate-load-key-{user}"))
        .header("content-type", "application/json")
        .header("idempotency-key", &**key)
        .body(Full::new(body))?;
    let started = Instant::now();
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.as_bytes() == b"true");
    let bytes = response.into_body().collect().await?.to_bytes();
    let latency = started.elapsed();
    let transaction_id = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("transaction_id")?.as_str().map(str::to_owned));
    Ok((
        Sample {
            user,
            key: Arc::clone(key),
            status,
            replayed,
            transaction_id,
            body_hash: hash_bytes(&bytes),
        },
        latency,
    ))
}

/// A request's latency: from when it was `due` (at a fixed rate), or its own round trip.
fn latency_from(due: Option<Instant>, round_trip: Duration, answered: Instant) -> Duration {
    due.map_or(round_trip, |due| {
        answered.saturating_duration_since(due).max(round_trip)
    })
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 100 s at 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

pub(crate) async fn load(args: &Args, base: &str, run: &str, progress: &ProgressBar) -> Measured {
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.concurrency * 2)
        .build_http();
    let deadline = Instant::now() + args.duration;
    let started = Instant::now();
    let errors = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for id in 0..args.concurrency {
        let worker = Worker {
            id,
            rng: fastrand::Rng::with_seed(id as u64 * 7919 + 1),
            client: client.clone(),
            base: base.into(),
            run: run.into(),
            args: args.clone(),
            progress: progress.clone(),
            errors: Arc::clone(&errors),
            latency: new_histogram(),
            samples: Vec::new(),
            history: Vec::new(),
            sent: 0,
        };
        workers.spawn(worker.run(deadline));
    }
    let mut latency = new_histogram();
    let mut samples = Vec::new();
    while let Some(joined) = workers.join_next().await {
        if let Ok((worker_latency, worker_samples)) = joined {
            let _ = latency.add(&worker_latency);
            samples.extend(worker_samples);
        }
    }
    Measured {
        elapsed: started.elapsed(),
        latency,
        samples,
        errors: errors.load(Ordering::Relaxed),
    }
}

/// One of `--concurrency` request loops: its random stream, what it measured, and the
/// payments it may send again.
struct Worker {
    id: usize,
    rng: fastrand::Rng,
    client: HttpClient,
    base: Arc<str>,
    run: Arc<str>,
    args: Args,
    progress: ProgressBar,
    errors: Arc<AtomicU64>,
    latency: Histogram<u64>,
    samples: Vec<Sample>,
    /// Up to 1 000 earlier payments (user, key, body), for retries.
    history: Vec<(usize, Arc<str>, Bytes)>,
    sent: u64,
}

impl Worker {
    /// Sends until `deadline`: at the worker's share of `--rate`, or as fast as answered.
    async fn run(mut self, deadline: Instant) -> (Histogram<u64>, Vec<Sample>) {
        let interval = (self.args.rate > 0)
            .then(|| Duration::from_secs_f64(self.args.concurrency as f64 / self.args.rate as f64));
        let mut next_at = Instant::now();
        while Instant::now() < deadline {
            // At a fixed rate, a request's latency counts from when it was due, not from when
            // a worker that fell behind got round to sending it: otherwise a slow answer hides
            // the queueing it caused (coordinated omission).
            let mut due = None;
            if let Some(interval) = interval {
                tokio::time::sleep_until(next_at.into()).await;
                due = Some(next_at);
                next_at += interval;
            }
            self.operation(due).await;
        }
        (self.latency, self.samples)
    }

    /// One operation of the mix: a retry of an earlier payment, a new payment sent twice at
    /// once, or a new payment (a flood sends only new ones).
    async fn operation(&mut self, due: Option<Instant>) {
        let roll = match self.args.scenario {
            Scenario::Payments => self.rng.f64(),
            Scenario::Flood => 1.0,
        };
        if roll < self.args.retry_share && !self.history.is_empty() {
            let (user, key, body) = self.history[self.rng.usize(..self.history.len())].clone();
            let answer = pay(&self.client, &self.base, user, &key, body).await;
            self.record(due, answer);
            return;
        }
        self.sent += 1;
        let user = match self.args.scenario {
            Scenario::Payments => self.rng.usize(..self.args.users.max(1)),
            Scenario::Flood => 0,
        };
        let key: Arc<str> = Arc::from(format!("{}-{}-{}", self.run, self.id, self.sent));
        let body = body_for(self.rng.u64(100..100_000));
        if roll < self.args.retry_share + self.args.duplicate_share {
            let (client, base) = (&self.client, &self.base);
            let (a, b) = tokio::join!(
                pay(client, base, user, &key, body.clone()),
                pay(client, base, user, &key, body.clone())
            );
            self.record(due, a);
            self.record(due, b);
        } else {
            let answer = pay(&self.client, &self.base, user, &key, body.clone()).await;
            self.record(due, answer);
        }
        self.remember(user, key, body);
    }

    fn record(&mut self, due: Option<Instant>, answer: Result<(Sample, Duration), BoxError>) {
        match answer {
            Ok((sample, took)) => {
                let took = latency_from(due, took, Instant::now());
                let _ = self.latency.record(took.as_micros().max(1) as u64);
                self.samples.push(sample);
                self.progress.inc(1);
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Keeps a payment for retries: the first 1 000, then each replacing one at random.
    fn remember(&mut self, user: usize, key: Arc<str>, body: Bytes) {
        if self.history.len() < 1_000 {
            self.history.push((user, key, body));
        } else {
            let slot = self.rng.usize(..self.history.len());
            self.history[slot] = (user, key, body);
        }
    }
}

pub(crate) fn report(name: &str, measured: &Measured) -> (f64, f64) {
    let secs = measured.elapsed.as_secs_f64();
    let requests = measured.samples.len() as f64;
    let executed = measured
        .samples
        .iter()
        .filter(|s| s.status == 201 && s.replayed != Some(true))
        .count() as f64;
    let mut statuses = BTreeMap::<String, u64>::new();
    for sample in &measured.samples {
        let label = match sample.replayed {
            Some(true) => format!("{} replayed", sample.status),
            _ => sample.status.to_string(),
        };
        *statuses.entry(label).or_default() += 1;
    }
    let h = &measured.latency;
    println!("{name}");
    println!(
        "  {:.0} requests/s, {:.0} payments executed/s over {:.1} s ({} requests, {} transport errors)",
        requests / secs,
        executed / secs,
        secs,
        measured.samples.len(),
        measured.errors
    );
    println!(
        "  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.9) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.value_at_quantile(0.999) as f64 / 1e3,
        h.max() as f64 / 1e3
    );
    println!("  statuses: {statuses:?}");
    (requests / secs, executed / secs)
}

pub(crate) fn progress_bar(args: &Args, what: &str) -> ProgressBar {
    if args.quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg} {elapsed} · {pos} answers · {per_sec}")
    {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_send_counts_its_wait() {
        let answered = Instant::now();
        let round_trip = Duration::from_millis(1);
        let due = answered - Duration::from_millis(50);
        assert_eq!(
            latency_from(Some(due), round_trip, answered),
            Duration::from_millis(50)
        );
        assert_eq!(latency_from(None, round_trip, answered), round_trip);
        // Sent on time: the round trip.
        let due = answered - Duration::from_micros(900);
        assert_eq!(latency_from(Some(due), round_trip, answered), round_trip);
    }
}
