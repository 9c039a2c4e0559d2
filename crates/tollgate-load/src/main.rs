//! `tollgate-load`: drives a payments server with many users, a share of deliberate retries and
//! of concurrent same-key duplicates, then reports throughput, latency percentiles, status
//! counts and a correctness audit: for every idempotency key exactly one payment exists and
//! every successful reply agrees.
//!
//! References measured in the same run, on the same machine, with the same client:
//! `--reference hello` drives a hyper hello-world server (a child process, like the server),
//! `--reference pg-commits` runs two single-row autocommitted INSERTs per "payment" on the same
//! database. Ratios, not absolute numbers, are what carry between machines.
//!
//! ```text
//! cargo run --release -p tollgate-load -- --spawn target/release/payments-server \
//!     --duration 10s --concurrency 32 --reference hello
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use indicatif::{ProgressBar, ProgressStyle};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Debug, Parser)]
#[command(
    name = "tollgate-load",
    about = "Load and audit a Tollgate payments server",
    version
)]
struct Args {
    /// The server to load (ignored with --spawn).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Start this payments-server binary on a free port for the run, with keys for --users,
    /// limits high enough not to interfere, and the processor's latency set to
    /// --processor-latency.
    #[arg(long)]
    spawn: Option<PathBuf>,
    /// PostgreSQL for the spawned server (and for --reference pg-commits).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Redis for the spawned server.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// Distinct users (API keys `load-key-N` for user `load-user-N`).
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to load.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Requests per second in total (0: as fast as the server answers).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Share of operations that retry an earlier payment with its key and body.
    #[arg(long, default_value_t = 0.2)]
    retry_share: f64,
    /// Share of operations that send the same new payment twice at once.
    #[arg(long, default_value_t = 0.1)]
    duplicate_share: f64,
    /// The spawned server's simulated processor latency.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    processor_latency: Duration,
    /// A reference to measure in the same run.
    #[arg(long, value_enum, default_value_t = Reference::None)]
    reference: Reference,
    /// Print the API_KEYS value for --users (to start a server by hand) and exit.
    #[arg(long)]
    print_api_keys: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// (internal) serve hello-world on this address and print the port.
    #[arg(long, hide = true)]
    serve_hello: Option<std::net::SocketAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Reference {
    None,
    /// A hyper hello-world server, driven by the same client.
    Hello,
    /// Two single-row autocommitted INSERTs per payment, at the same concurrency.
    PgCommits,
}

/// One answer.
#[derive(Clone, Debug)]
struct Sample {
    user: usize,
    key: Arc<str>,
    status: u16,
    replayed: Option<bool>,
    transaction_id: Option<String>,
    body_hash: u64,
}

/// What one load run measured.
#[derive(Debug)]
struct Measured {
    elapsed: Duration,
    latency: Histogram<u64>,
    samples: Vec<Sample>,
    errors: u64,
}

fn api_keys(users: usize) -> String {
    (0..users)
        .map(|i| format!("load-key-{i}:load-user-{i}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A child process, killed when dropped.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(port: u16) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("nothing listens on port {port} after 30 s").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn spawn_server(args: &Args, binary: &PathBuf, run: &str) -> Result<(Spawned, String), BoxError> {
    let port = free_port()?;
    let config = std::env::temp_dir().join(format!("tollgate-load-{run}.toml"));
    std::fs::write(
        &config,
        format!(
            "[processor]\nlatency = \"{}\"\n[[policy]]\nname = \"global\"\nscope = \"global\"\n\
             algorithm = \"sliding-window\"\nlimit = 10000000\nwindow = \"60s\"\n",
            humantime::format_duration(args.processor_latency)
        ),
    )?;
    let mut command = Command::new(binary);
    command
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_LEVEL", "warn")
        .env("API_KEYS", api_keys(args.users))
        .env("TOLLGATE_CONFIG", &config)
        .env("DATABASE_SCHEMA", run)
        .env("REDIS_KEY_PREFIX", run)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .stdout(Stdio::null());
    if let Some(url) = &args.database_url {
        command.env("DATABASE_URL", url);
    }
    if let Some(url) = &args.redis_url {
        command.env("REDIS_URL", url);
    }
    let child = Spawned(command.spawn()?);
    wait_for_port(port)?;
    Ok((child, format!("http://127.0.0.1:{port}")))
}

fn spawn_hello() -> Result<(Spawned, String), BoxError> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve-hello", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let port: u16 = line.trim().parse()?;
    Ok((Spawned(child), format!("http://127.0.0.1:{port}")))
}

/// The reference server: reads the body, answers 201 with a small JSON body.
async fn serve_hello(addr: std::net::SocketAddr) -> Result<(), BoxError> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("{}", listener.local_addr()?.port());
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                |request: hyper::Request<hyper::body::Incoming>| async move {
                    let _ = request.into_body().collect().await;
                    let mut response = hyper::Response::new(Full::new(Bytes::from_static(
                        br#"{"transaction_id":"hello","status":"succeeded"}"#,
                    )));
                    *response.status_mut() = hyper::StatusCode::CREATED;
                    Ok::<_, Infallible>(response)
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn body_for(amount_cents: u64) -> Bytes {
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
        .header("authorization", format!("Bearer load-key-{user}"))
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

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 100 s at 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

async fn load(args: &Args, base: &str, run: &str, progress: &ProgressBar) -> Measured {
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.concurrency * 2)
        .build_http();
    let deadline = Instant::now() + args.duration;
    let started = Instant::now();
    let errors = Arc::new(AtomicU64::new(0));
    let per_worker_interval = (args.rate > 0)
        .then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate as f64));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..args.concurrency {
        let (client, base, run) = (client.clone(), base.to_owned(), run.to_owned());
        let (args, progress, errors) = (args.clone(), progress.clone(), Arc::clone(&errors));
        workers.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(worker as u64 * 7919 + 1);
            let mut latency = new_histogram();
            let mut samples = Vec::new();
            let mut history: Vec<(usize, Arc<str>, Bytes)> = Vec::new();
            let mut next_at = Instant::now();
            let mut n = 0_u64;
            while Instant::now() < deadline {
                if let Some(interval) = per_worker_interval {
                    tokio::time::sleep_until(next_at.into()).await;
                    next_at += interval;
                }
                let roll = rng.f64();
                let mut record = |result: Result<(Sample, Duration), BoxError>| match result {
                    Ok((sample, took)) => {
                        let _ = latency.record(took.as_micros().max(1) as u64);
                        samples.push(sample);
                        progress.inc(1);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                };
                if roll < args.retry_share && !history.is_empty() {
                    let (user, key, body) = history[rng.usize(..history.len())].clone();
                    record(pay(&client, &base, user, &key, body).await);
                    continue;
                }
                n += 1;
                let user = rng.usize(..args.users.max(1));
                let key: Arc<str> = Arc::from(format!("{run}-{worker}-{n}"));
                let body = body_for(rng.u64(100..100_000));
                if roll < args.retry_share + args.duplicate_share {
                    let (a, b) = tokio::join!(
                        pay(&client, &base, user, &key, body.clone()),
                        pay(&client, &base, user, &key, body.clone())
                    );
                    record(a);
                    record(b);
                } else {
                    record(pay(&client, &base, user, &key, body.clone()).await);
                }
                if history.len() < 1_000 {
                    history.push((user, key, body));
                } else {
                    let slot = rng.usize(..history.len());
                    history[slot] = (user, key, body);
                }
            }
            (latency, samples)
        });
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

/// Every key's successful replies agree; no two keys share a payment; every payment exists,
/// succeeded, and belongs to its user.
async fn audit(base: &str, measured: &Measured, concurrency: usize) -> Vec<String> {
    let (mut violations, to_check) = check_replies(&measured.samples);
    violations.extend(check_stored(base, to_check, concurrency).await);
    violations
}

/// Every key's successful replies agree and at most one executed; no two keys share a
/// transaction. Returns the violations and, per key, `(user, transaction id)` to look up.
fn check_replies(samples: &[Sample]) -> (Vec<String>, Vec<(usize, String)>) {
    let mut violations = Vec::new();
    let mut by_key: HashMap<&str, Vec<&Sample>> = HashMap::new();
    for sample in samples {
        by_key.entry(&sample.key).or_default().push(sample);
    }
    let mut owner_of_txn: HashMap<&str, &str> = HashMap::new();
    let mut to_check = Vec::new();
    for (key, samples) in &by_key {
        let ok: Vec<_> = samples.iter().filter(|s| s.status == 201).collect();
        let executed = samples
            .iter()
            .filter(|s| s.replayed == Some(false) && s.status == 201)
            .count();
        if executed > 1 {
            violations.push(format!("key {key}: executed {executed} times"));
        }
        let bodies: HashSet<u64> = ok.iter().map(|s| s.body_hash).collect();
        let txns: HashSet<_> = ok
            .iter()
            .filter_map(|s| s.transaction_id.as_deref())
            .collect();
        if bodies.len() > 1 || txns.len() > 1 {
            violations.push(format!(
                "key {key}: {} different replies, {} transaction ids",
                bodies.len(),
                txns.len()
            ));
        }
        if let (Some(txn), Some(first)) = (txns.iter().next(), ok.first()) {
            if let Some(other) = owner_of_txn.insert(txn, key) {
                violations.push(format!("keys {key} and {other} share {txn}"));
            }
            to_check.push((first.user, (*txn).to_owned()));
        }
    }
    (violations, to_check)
}

/// Each payment exists, succeeded, and is readable by its owner.
async fn check_stored(
    base: &str,
    to_check: Vec<(usize, String)>,
    concurrency: usize,
) -> Vec<String> {
    let mut violations = Vec::new();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let found = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let queue = Arc::new(tokio::sync::Mutex::new(to_check));
    let mut checkers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, base, queue, found) = (
            client.clone(),
            base.to_owned(),
            Arc::clone(&queue),
            Arc::clone(&found),
        );
        checkers.spawn(async move {
            loop {
                let Some((user, txn)) = queue.lock().await.pop() else {
                    break;
                };
                let request = hyper::Request::get(format!("{base}/api/v1/payments/{txn}"))
                    .header("authorization", format!("Bearer load-key-{user}"))
                    .body(Full::new(Bytes::new()));
                let outcome = match request {
                    Ok(request) => match client.request(request).await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let body = response
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let state = serde_json::from_slice::<serde_json::Value>(&body)
                                .ok()
                                .and_then(|v| v.get("status")?.as_str().map(str::to_owned));
                            (status == 200 && state.as_deref() == Some("succeeded"))
                                .then_some(())
                                .ok_or(format!("payment {txn}: {status} {state:?}"))
                        }
                        Err(error) => Err(format!("payment {txn}: {error}")),
                    },
                    Err(error) => Err(format!("payment {txn}: {error}")),
                };
                found.lock().await.push(outcome);
            }
        });
    }
    while checkers.join_next().await.is_some() {}
    for outcome in found.lock().await.drain(..) {
        if let Err(violation) = outcome {
            violations.push(violation);
        }
    }
    violations
}

fn report(name: &str, measured: &Measured) -> (f64, f64) {
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

/// Two single-row autocommitted INSERTs per payment, `concurrency` at a time, for `duration`.
async fn pg_commits(
    url: &str,
    concurrency: usize,
    duration: Duration,
    run: &str,
) -> Result<f64, BoxError> {
    let config: tokio_postgres::Config = url.parse()?;
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(concurrency)
        .build()?;
    let table = format!("{run}_pg_reference");
    pool.get()
        .await?
        .batch_execute(&format!(
            "CREATE TABLE {table} (id text PRIMARY KEY, user_id text NOT NULL, amount_minor bigint NOT NULL, \
             payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        ))
        .await?;
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (pool, table, done) = (pool.clone(), table.clone(), Arc::clone(&done));
        tasks.spawn(async move {
            let Ok(client) = pool.get().await else { return };
            let sql = format!(
                "INSERT INTO {table} (id, user_id, amount_minor, payload) VALUES ($1, $2, $3, $4)"
            );
            let Ok(statement) = client.prepare_cached(&sql).await else {
                return;
            };
            let payload = serde_json::json!({"status": 201, "body": "x".repeat(200)});
            let mut n = 0_u64;
            while Instant::now() < deadline {
                n += 1;
                for part in ["a", "b"] {
                    let id = format!("{worker}-{n}-{part}");
                    if client
                        .execute(&statement, &[&id, &"load-user", &1234_i64, &payload])
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    pool.get()
        .await?
        .batch_execute(&format!("DROP TABLE {table}"))
        .await?;
    Ok(rate)
}

async fn drop_schema(url: &str, schema: &str) {
    if let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await;
    }
}

fn progress_bar(args: &Args, what: &str) -> ProgressBar {
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

async fn run(args: Args) -> Result<bool, BoxError> {
    let run_id = format!("load_{}_{}", std::process::id(), fastrand::u32(..));
    let (_server, base) = match &args.spawn {
        Some(binary) => {
            let (child, base) = spawn_server(&args, binary, &run_id)?;
            (Some(child), base)
        }
        None => (None, args.url.trim_end_matches('/').to_owned()),
    };
    let bar = progress_bar(&args, "payments-server");
    let measured = load(&args, &base, &run_id, &bar).await;
    bar.finish_and_clear();
    let (requests_per_sec, payments_per_sec) =
        report(&format!("payments-server at {base}"), &measured);
    let violations = audit(&base, &measured, args.concurrency).await;
    let keys: HashSet<_> = measured.samples.iter().map(|s| &s.key).collect();
    if violations.is_empty() {
        println!(
            "  audit: {} keys, every reply agrees, one payment per key, each stored and succeeded",
            keys.len()
        );
    } else {
        println!("  audit: {} VIOLATIONS", violations.len());
        for violation in violations.iter().take(10) {
            println!("    {violation}");
        }
    }
    match args.reference {
        Reference::None => {}
        Reference::Hello => {
            let (_hello, hello_base) = spawn_hello()?;
            let bar = progress_bar(&args, "hyper hello-world");
            let reference = load(&args, &hello_base, &run_id, &bar).await;
            bar.finish_and_clear();
            let (hello_rate, _) = report(
                "reference: hyper hello-world (same client, same mix)",
                &reference,
            );
            println!(
                "  ratio: payments-server / hello-world = {:.2}×",
                requests_per_sec / hello_rate
            );
        }
        Reference::PgCommits => {
            let url = args
                .database_url
                .as_deref()
                .ok_or("--reference pg-commits needs --database-url")?;
            let rate = pg_commits(url, args.concurrency, args.duration, &run_id).await?;
            println!(
                "reference: two single-row commits per payment, {} connections",
                args.concurrency
            );
            println!("  {rate:.0} payments/s");
            println!(
                "  ratio: payments-server executed / two-commit reference = {:.2}×",
                payments_per_sec / rate
            );
        }
    }
    if args.spawn.is_some() {
        if let Some(url) = &args.database_url {
            drop_schema(url, &run_id).await;
        }
    }
    Ok(violations.is_empty() && measured.errors == 0)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.print_api_keys {
        println!("{}", api_keys(args.users));
        return std::process::ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tollgate-load: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(addr) = args.serve_hello {
        if let Err(error) = runtime.block_on(serve_hello(addr)) {
            eprintln!("tollgate-load: {error}");
        }
        return std::process::ExitCode::FAILURE;
    }
    match runtime.block_on(run(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(error) => {
            eprintln!("tollgate-load: {error}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &str, status: u16, replayed: Option<bool>, txn: &str, body: u64) -> Sample {
        Sample {
            user: 0,
            key: Arc::from(key),
            status,
            replayed,
            transaction_id: Some(txn.to_owned()),
            body_hash: body,
        }
    }

    #[test]
    fn the_audit_accepts_a_correct_run_and_names_every_kind_of_violation() {
        let clean = [
            sample("k1", 201, Some(false), "t1", 1),
            sample("k1", 201, Some(true), "t1", 1),
            sample("k1", 409, None, "", 9),
            sample("k2", 201, Some(false), "t2", 2),
        ];
        let (violations, to_check) = check_replies(&clean);
        assert!(violations.is_empty(), "{violations:?}");
        assert_eq!(to_check.len(), 2);

        let broken = [
            // Executed twice.
            sample("k1", 201, Some(false), "t1", 1),
            sample("k1", 201, Some(false), "t1", 1),
            // Replies disagree.
            sample("k2", 201, Some(false), "t2", 2),
            sample("k2", 201, Some(true), "t2", 3),
            // Two keys, one payment (what a hello-world server does).
            sample("k3", 201, None, "hello", 4),
            sample("k4", 201, None, "hello", 4),
        ];
        let (violations, _) = check_replies(&broken);
        let text = violations.join("\n");
        assert!(text.contains("k1: executed 2 times"), "{text}");
        assert!(text.contains("k2: 2 different replies"), "{text}");
        assert!(text.contains("share hello"), "{text}");
        assert_eq!(violations.len(), 3, "{text}");
    }

    #[test]
    fn api_keys_and_bodies() {
        assert_eq!(api_keys(2), "load-key-0:load-user-0,load-key-1:load-user-1");
        let body: serde_json::Value = serde_json::from_slice(&body_for(1205)).expect("JSON");
        assert_eq!(body["amount"], "12.05");
    }
}
