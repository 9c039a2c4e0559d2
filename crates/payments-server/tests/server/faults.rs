//! Faults with PostgreSQL and Redis: a server killed between the charge and the answer, the
//! limiter's failure modes, and shutdown under load.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::processor::MockProcessor;
use crate::support::{
    ALICE, Isolated, Options, Proxy, Server, free_port, payment, try_pay, unique,
};

/// A server killed (SIGKILL) after `mock-processor` charged and before it answered: a retry with
/// the same key on another process reconciles with the processor and completes the payment
/// without a second charge (the processor's own count), and the audit trail shows both attempts.
#[test]
fn a_killed_server_payment_is_completed_by_another_without_a_second_charge() {
    let Some(services) =
        Isolated::new("a_killed_server_payment_is_completed_by_another_without_a_second_charge")
    else {
        return;
    };
    // The charge is made at once; its answer takes 4 s, past the server's deadline.
    let processor = MockProcessor::start(free_port(), &["--latency", "4s"]);
    let config = "[processor]\ntimeout = \"900ms\"\nattempt_timeout = \"800ms\"\n\
                  [idempotency]\nlease = \"1s\"\nwait = \"100ms\"\n";
    let options = services
        .options()
        .env("PROCESSOR_URL", &processor.url())
        .toml(config);
    let mut doomed = Server::start(&options);
    let survivor = Server::start(&options);
    let key = unique("order");
    let body = payment("12.34", "card");

    let doomed_port = doomed.port;
    let (key_for_thread, body_for_thread) = (key.clone(), body.clone());
    let first =
        std::thread::spawn(move || try_pay(doomed_port, ALICE, &key_for_thread, &body_for_thread));
    // Wait for the charge to be made; its answer is 2–6 s away.
    let deadline = Instant::now() + Duration::from_secs(10);
    while processor.stats().0 == 0 {
        assert!(Instant::now() < deadline, "the processor was never called");
        std::thread::sleep(Duration::from_millis(20));
    }
    doomed.child.kill().expect("SIGKILL");
    let _ = doomed.child.wait();
    assert!(
        first.join().expect("the client").is_none(),
        "the killed server never answered"
    );

    // The retry: 409 while the dead owner's lease runs, then it resumes and reconciles.
    let deadline = Instant::now() + Duration::from_secs(20);
    let completed = loop {
        let response = try_pay(survivor.port, ALICE, &key, &body).expect("an answer");
        if response.status != 409 || Instant::now() > deadline {
            break response;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    completed.expect(201);
    assert_eq!(completed.header("idempotent-replayed"), Some("false"));
    let txn = completed.json()["transaction_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    assert_eq!(processor.stats().0, 1, "charged once");
    assert_eq!(
        services.count(&format!("SELECT count(*) FROM {{schema}}.payments WHERE transaction_id = '{txn}' AND status = 'succeeded'")),
        1
    );
    assert_eq!(services.count("SELECT count(*) FROM {schema}.payments"), 1);
    // Both attempts are in the trail: the killed one's start, the survivor's completion.
    let trail = survivor
        .get("/api/v1/audit-logs?limit=100", Some(ALICE))
        .json();
    let ours: Vec<_> = trail["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["transaction_id"] == txn.as_str())
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["fields"]["resumed"].clone(),
            )
        })
        .collect();
    assert_eq!(
        ours,
        [
            ("payment_attempt".to_owned(), serde_json::Value::Bool(true)),
            ("payment_started".to_owned(), serde_json::Value::Null),
        ],
        "{trail}"
    );
}

/// Each failure mode of the Redis limiter, with Redis cut mid-run and restored.
#[test]
fn the_limiter_follows_its_failure_mode_and_recovers() {
    let Some(services) = Isolated::new("the_limiter_follows_its_failure_mode_and_recovers") else {
        return;
    };
    let target = services
        .redis_url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379")
        .to_owned();
    // A caller's request (the public routes count in the strangers' bucket, in the process),
    // on a route that needs nothing else from Redis.
    let expected = [
        ("fail-open", 200, "fail_open"),
        ("fail-closed", 429, "fail_closed"),
        ("local-fallback", 200, "local_fallback"),
        ("error", 503, ""),
    ];
    let call = |server: &Server| server.get("/api/v1/audit-logs", Some(ALICE));
    for (mode, status, counter) in expected {
        let proxy = Proxy::to(&target);
        let options = Options::default()
            .env("REDIS_URL", &format!("redis://127.0.0.1:{}", proxy.port))
            .env("REDIS_KEY_PREFIX", &format!("{}_{mode}", services.prefix))
            .toml(&format!(
                // Every /health probes afresh: the test watches the state change.
                "[rate_limit]\nfailure_mode = \"{mode}\"\nredis_timeout = \"200ms\"\n\
                 [health]\ncache = \"0s\"\n\
                 [[policy]]\nname = \"per-user\"\nscope = \"user\"\nalgorithm = \"sliding-window\"\n\
                 limit = 1000\nwindow = \"60s\"\n"
            ));
        let server = Server::start(&options);
        call(&server).expect(200);
        proxy.cut();
        let degraded = call(&server);
        degraded.expect(status);
        if status != 200 {
            assert!(
                degraded.header("retry-after").is_some(),
                "{mode}: {degraded:?}"
            );
        }
        let health = server.get("/health", None).json();
        assert_eq!(health["status"], "degraded", "{mode}: {health}");
        if !counter.is_empty() {
            let metrics = server.get("/metrics", None).body;
            let line = format!("rate_limiter_degraded_decisions_total{{mode=\"{counter}\"}} ");
            let count: u64 = metrics
                .lines()
                .find_map(|l| l.strip_prefix(&line))
                .and_then(|n| n.parse().ok())
                .expect("the counter");
            assert!(count >= 1, "{mode}: {metrics}");
        }
        // Redis back: the next decisions are Redis's again, without a restart.
        proxy.restore();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok =
                server.get("/health", None).json()["status"] == "ok" && call(&server).status == 200;
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "{mode}: no recovery");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// How many answers of each status and `Idempotent-Replayed` value (`-` when absent).
fn by_status_and_replay(answers: &[crate::support::Response]) -> BTreeMap<(u16, String), u64> {
    let mut statuses = BTreeMap::new();
    for answer in answers {
        let replayed = answer.header("idempotent-replayed").unwrap_or("-");
        *statuses
            .entry((answer.status, replayed.to_owned()))
            .or_default() += 1;
    }
    statuses
}

/// SIGTERM while 40 clients pay and replay (300 ms per payment, so some are in flight): every payment answered 201 is stored and final,
/// every accepted audit event is written, nothing is left pending.
#[test]
fn graceful_shutdown_under_load_loses_nothing() {
    let Some(services) = Isolated::new("graceful_shutdown_under_load_loses_nothing") else {
        return;
    };
    // The charges are counted by the processor itself.
    let processor = MockProcessor::start(free_port(), &["--latency", "300ms"]);
    let config = "[[policy]]\nname = \"per-user\"\nscope = \"user\"\nalgorithm = \"sliding-window\"\nlimit = 100000\nwindow = \"60s\"\n";
    let options = services.options().env("PROCESSOR_URL", &processor.url());
    let mut server = Server::start(&options.toml(config));
    let port = server.port;
    let pid = server.child.id();
    let clients: Vec<_> = (0..40)
        .map(|i| {
            std::thread::spawn(move || {
                let body = payment("3.00", "card");
                let mut answers = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(3);
                let mut key = unique(&format!("load{i}"));
                for n in 0.. {
                    if Instant::now() > deadline {
                        break;
                    }
                    // Each key is paid, then replayed once: payments are in flight all along.
                    if n % 2 == 0 {
                        key = unique(&format!("load{i}"));
                    }
                    match try_pay(port, ALICE, &key, &body) {
                        Some(response) => answers.push(response),
                        None => break,
                    }
                }
                answers
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let answers: Vec<_> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("a client"))
        .collect();
    let status = server.child.wait().expect("exits");
    assert!(status.success(), "{status}");

    let statuses = by_status_and_replay(&answers);
    let count_of = |replayed: &str| {
        statuses
            .get(&(201, replayed.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    let (executed, replayed) = (count_of("false"), count_of("true"));
    assert!(executed >= 1 && replayed >= 1, "{statuses:?}");
    assert_eq!(
        statuses.keys().filter(|(s, _)| *s != 201).count(),
        0,
        "only 201s before the drain: {statuses:?}"
    );
    let count = |sql: &str| services.count(sql) as u64;
    assert_eq!(
        count("SELECT count(*) FROM {schema}.payments WHERE status = 'succeeded'"),
        executed
    );
    assert_eq!(
        count("SELECT count(*) FROM {schema}.payments WHERE status <> 'succeeded'"),
        0,
        "nothing pending"
    );
    assert_eq!(
        u64::try_from(processor.stats().0).unwrap_or(0),
        executed,
        "one charge per payment executed"
    );
    // In-transaction events, and the queued ones flushed at shutdown.
    assert_eq!(
        count("SELECT count(*) FROM {schema}.audit_events WHERE action = 'payment_attempt'"),
        executed
    );
    assert_eq!(
        count("SELECT count(*) FROM {schema}.audit_events WHERE action = 'payment_replay'"),
        replayed
    );
    let _ = writeln_stats(executed, replayed, &statuses);
}

fn writeln_stats(
    executed: u64,
    replayed: u64,
    statuses: &BTreeMap<(u16, String), u64>,
) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(
        std::io::stderr(),
        "shutdown under load: {executed} executed, {replayed} replayed, answers {statuses:?}"
    )
}

/// The first owner stalls (SIGSTOP, as a long pause would) after charging, past its lease: the
/// retry on the other process takes the key over, reconciles the same charge and answers; when
/// the stalled owner resumes, its completion is refused (409) and changes nothing. (The same
/// fence on the memory store is tested on the idempotency layer itself, in tollgate-http.)
#[test]
fn a_stale_owner_cannot_complete_redis_and_postgres() {
    let Some(services) = Isolated::new("a_stale_owner_cannot_complete_redis_and_postgres") else {
        return;
    };
    let processor = MockProcessor::start(free_port(), &["--latency", "1500ms"]);
    let config = "[processor]\ntimeout = \"2s\"\nattempt_timeout = \"2s\"\n\
                  [idempotency]\nlease = \"3s\"\nwait = \"100ms\"\n";
    let options = services
        .options()
        .env("PROCESSOR_URL", &processor.url())
        .toml(config);
    let stalled = Server::start(&options);
    let other = Server::start(&options);
    let (key, body) = (unique("order"), payment("8.00", "card"));
    let (port, k, b) = (stalled.port, key.clone(), body.clone());
    let first = std::thread::spawn(move || try_pay(port, ALICE, &k, &b).expect("an answer"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while processor.stats().0 == 0 {
        assert!(Instant::now() < deadline, "the processor was never called");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&stalled, "-STOP");
    std::thread::sleep(Duration::from_millis(3_500));
    let deadline = Instant::now() + Duration::from_secs(20);
    let takeover = loop {
        let response = try_pay(other.port, ALICE, &key, &body).expect("an answer");
        if response.status != 409 || Instant::now() > deadline {
            break response;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    takeover.expect(201);
    assert_eq!(takeover.header("idempotent-replayed"), Some("false"));
    signal(&stalled, "-CONT");
    let stale = first.join().expect("the first request");
    stale.expect(409);
    // The key's result is the takeover's.
    let replay = try_pay(other.port, ALICE, &key, &body).expect("an answer");
    replay.expect(201);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, takeover.body);
    assert_eq!(processor.stats().0, 1, "charged once");
    assert_eq!(
        services.count("SELECT count(*) FROM {schema}.payments WHERE status = 'succeeded'"),
        1
    );
}

fn signal(server: &Server, which: &str) {
    let sent = std::process::Command::new("kill")
        .args([which, &server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill {which}");
}
