//! Jepsen-style: several server processes on Redis and PostgreSQL, clients paying and retrying
//! with their keys, and a nemesis that kills and restarts servers, pauses them past their
//! lease (SIGSTOP/SIGCONT), and cuts Redis and PostgreSQL (TCP proxies), for a bounded time.
//! Every request and answer is recorded; after the faults stop and every key is paid, the
//! history is checked: one payment row and one charge (the processor's own record) per key,
//! none left pending, every final answer of a key identical, never a 500.
//!
//! The servers' payment writes take both of group commit's paths: a write alone in flight is
//! sent at once (`group_commit_alone_up_to = 1`), and concurrent ones are batched.
//!
//! `TOLLGATE_HISTORY_SECONDS` (default 12) sets how long the faults run and
//! `TOLLGATE_HISTORY_SEED` the seed of the clients' and the nemesis's choices (random unless
//! set); each run prints both and a summary.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::outage::{Proxied, proxied};
use crate::processor::MockProcessor;
use crate::support::{ALICE, BOB, CAROL, Isolated, Options, Server, free_port, try_pay};

const LEASE: Duration = Duration::from_secs(2);
const SERVERS: usize = 3;
const CLIENTS: usize = 8;

/// One request of the history: which key, and what came back (`None`: no answer).
struct Op {
    key: usize,
    answer: Option<(u16, String)>,
}

fn setting<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn user(key: usize) -> &'static str {
    [ALICE, BOB, CAROL][key % 3]
}

fn body(key: usize) -> String {
    format!(
        r#"{{"amount": "{}.{:02}", "currency": "USD", "payment_method": "card", "metadata": {{"n": "{key}"}}}}"#,
        1 + key % 500,
        key % 100
    )
}

/// A server on a fixed port (so a restarted one takes its place), ready.
fn start_on(port: u16, options: &Options) -> Server {
    let options = options
        .clone()
        .env("BIND_ADDR", &format!("127.0.0.1:{port}"));
    let mut server = Server::spawn(&options);
    server.port = port;
    server.wait_until_listening();
    server
}

/// What the nemesis did.
#[derive(Default, Debug)]
struct Faults {
    kills: usize,
    pauses: usize,
    redis_cuts: usize,
    postgres_cuts: usize,
}

/// Injects one fault at a time, each healed before the next, until `stop`.
fn nemesis(
    servers: &mut [Server],
    proxies: &Proxied,
    options: &Options,
    seed: u64,
    stop: &AtomicBool,
) -> Faults {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut faults = Faults::default();
    let database = proxies
        .database
        .as_ref()
        .expect("PostgreSQL behind a proxy");
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(rng.u64(300..1200)));
        let i = rng.usize(..servers.len());
        match rng.u8(..4) {
            0 => {
                let port = servers[i].port;
                let _ = servers[i].child.kill();
                let _ = servers[i].child.wait();
                std::thread::sleep(Duration::from_millis(200));
                servers[i] = start_on(port, options);
                faults.kills += 1;
            }
            1 => {
                servers[i].signal("STOP");
                std::thread::sleep(LEASE + Duration::from_millis(500));
                servers[i].signal("CONT");
                faults.pauses += 1;
            }
            2 => {
                proxies.redis.cut();
                std::thread::sleep(Duration::from_millis(rng.u64(300..1500)));
                proxies.redis.restore();
                faults.redis_cuts += 1;
            }
            _ => {
                database.cut();
                std::thread::sleep(Duration::from_millis(rng.u64(300..1500)));
                database.restore();
                faults.postgres_cuts += 1;
            }
        }
    }
    faults
}

/// Pays new keys and retries recent ones (its own and others') on random servers until `stop`.
fn client(
    ports: &[u16],
    seed: u64,
    keys: &AtomicUsize,
    history: &Mutex<Vec<Op>>,
    stop: &AtomicBool,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(Ordering::SeqCst) {
        // A retry picks any key so far, another client's included: a duplicate can arrive while
        // the first request is in flight, on another server, or on a paused one.
        let issued = keys.load(Ordering::SeqCst);
        let key = if issued == 0 || rng.f64() < 0.6 {
            keys.fetch_add(1, Ordering::SeqCst)
        } else {
            issued - 1 - rng.usize(..issued.min(64))
        };
        let port = ports[rng.usize(..ports.len())];
        let answer = try_pay(port, user(key), &key_name(key), &body(key))
            .map(|reply| (reply.status, reply.body));
        history.lock().expect("history").push(Op { key, answer });
    }
}

fn key_name(key: usize) -> String {
    format!("history-key-{key:08}")
}

/// After the faults: pays every key until its answer is final.
fn settle(ports: &[u16], keys: usize, history: &Mutex<Vec<Op>>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    for key in 0..keys {
        loop {
            let port = ports[key % ports.len()];
            let answer = try_pay(port, user(key), &key_name(key), &body(key))
                .map(|reply| (reply.status, reply.body));
            let done = matches!(answer, Some((201 | 402, _)));
            history.lock().expect("history").push(Op { key, answer });
            if done {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "key {key} not settled after the faults"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The checks on the history alone: every key's final answers identical; no 500.
fn check_answers(history: &[Op], keys: usize) -> (Vec<String>, BTreeMap<String, usize>) {
    let mut violations = Vec::new();
    let mut statuses = BTreeMap::new();
    let mut finals: Vec<Option<&str>> = vec![None; keys];
    for op in history {
        let status = op
            .answer
            .as_ref()
            .map_or("none".to_owned(), |(s, _)| s.to_string());
        *statuses.entry(status).or_insert(0) += 1;
        match &op.answer {
            Some((201 | 402, body)) => match finals[op.key] {
                None => finals[op.key] = Some(body),
                Some(first) if first != body => violations.push(format!(
                    "key {}: two different final answers:\n  {first}\n  {body}",
                    op.key
                )),
                Some(_) => {}
            },
            Some((status, body)) if ![409, 429, 502, 503].contains(status) => {
                violations.push(format!("key {}: {status}: {body}", op.key));
            }
            _ => {}
        }
    }
    (violations, statuses)
}

#[test]
fn a_history_under_kills_pauses_and_cuts_charges_every_key_exactly_once() {
    let Some(services) =
        Isolated::new("a_history_under_kills_pauses_and_cuts_charges_every_key_exactly_once")
    else {
        return;
    };
    let seconds: u64 = setting("TOLLGATE_HISTORY_SECONDS").unwrap_or(12);
    let seed: u64 = setting("TOLLGATE_HISTORY_SEED").unwrap_or_else(|| fastrand::u64(..));
    eprintln!(
        "history: seed {seed} (TOLLGATE_HISTORY_SEED={seed} repeats its choices), {seconds} s of faults"
    );
    let processor = MockProcessor::start(
        free_port(),
        &["--lose-rate", "0.05", "--seed", &seed.to_string()],
    );
    let mut proxies = proxied(&services, true);
    let limits = "[[policy]]\nname = \"payments\"\nscope = \"user\"\nalgorithm = \"sliding-window\"\n\
                  limit = 1000000\nwindow = \"1m\"\nendpoint = \"POST /api/v1/payments\"\n\
                  [idempotency]\nlease = \"2s\"\nwait = \"100ms\"\n\
                  [processor]\ntimeout = \"1s\"\nattempt_timeout = \"400ms\"\n\
                  [database]\npool_timeout = \"1s\"\ngroup_commit_alone_up_to = 1\n";
    proxies.options = std::mem::take(&mut proxies.options)
        .env("PROCESSOR_URL", &processor.url())
        .toml(limits);
    let ports: Vec<u16> = (0..SERVERS).map(|_| free_port()).collect();
    let mut servers: Vec<Server> = ports
        .iter()
        .map(|&p| start_on(p, &proxies.options))
        .collect();

    let (keys, history, stop) = (
        AtomicUsize::new(0),
        Mutex::new(Vec::new()),
        AtomicBool::new(false),
    );
    let started = Instant::now();
    let faults = std::thread::scope(|scope| {
        for c in 0..CLIENTS {
            let (ports, keys, history, stop) = (&ports, &keys, &history, &stop);
            scope.spawn(move || client(ports, seed ^ (c as u64 + 1), keys, history, stop));
        }
        let nemesis =
            scope.spawn(|| nemesis(&mut servers, &proxies, &proxies.options, seed, &stop));
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::SeqCst);
        nemesis.join().expect("the nemesis")
    });
    let faulted = started.elapsed();
    let keys = keys.load(Ordering::SeqCst);
    settle(&ports, keys, &history);
    let history = history.into_inner().expect("history");

    let (mut violations, statuses) = check_answers(&history, keys);
    let count =
        |sql: &str| services.count(&sql.replace("{keys}", "idempotency_key LIKE 'history-key-%'"));
    let rows = count("SELECT count(*) FROM {schema}.payments WHERE {keys}");
    let pending =
        count("SELECT count(*) FROM {schema}.payments WHERE {keys} AND status = 'pending'");
    let doubled = count(
        "SELECT count(*) FROM (SELECT 1 FROM {schema}.payments WHERE {keys} \
         GROUP BY user_id, idempotency_key HAVING count(*) > 1) d",
    );
    let (charges, processor_requests) = processor.stats();
    let keys_i64 = i64::try_from(keys).expect("a count");
    for (what, got, want) in [
        ("payment rows", rows, keys_i64),
        ("pending payments", pending, 0),
        ("keys with two payments", doubled, 0),
        ("processor charges", charges, keys_i64),
    ] {
        if got != want {
            violations.push(format!("{what}: {got}, expected {want}"));
        }
    }
    eprintln!(
        "history: seed {seed}, {:.1} s of faults ({faults:?}), {} operations on {keys} keys, statuses {statuses:?}, \
         {rows} payment rows, {charges} charges for {processor_requests} processor requests, {} violations",
        faulted.as_secs_f64(),
        history.len(),
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "seed {seed}: {}",
        violations.join("\n")
    );
    assert!(faults.kills + faults.pauses + faults.redis_cuts + faults.postgres_cuts > 0);
}
