//! The server charging through `mock-processor` over HTTP (`PROCESSOR_URL`): exactly once under
//! lost answers and failures, and a circuit breaker that opens when the processor is down and
//! closes by itself when it returns.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    ALICE, Isolated, Options, Server, free_port, payment, send, try_pay, try_pay_with, unique,
    workspace_binary,
};

/// A `mock-processor` process, killed when dropped.
pub(crate) struct MockProcessor {
    child: Child,
    port: u16,
}

impl Drop for MockProcessor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl MockProcessor {
    pub(crate) fn start(port: u16, args: &[&str]) -> MockProcessor {
        let mut child = Command::new(workspace_binary("mock-processor"))
            .args(args)
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env_remove("DATABASE_URL")
            .stderr(Stdio::piped())
            .spawn()
            .expect("mock-processor starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!("mock-processor exited: {status}: {stderr}");
            }
            assert!(Instant::now() < deadline, "mock-processor not listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        MockProcessor { child, port }
    }

    /// Charges made, requests received.
    pub(crate) fn stats(&self) -> (i64, i64) {
        let stats = send(self.port, "GET", "/v1/stats", &[], "")
            .expect("stats")
            .json();
        (
            stats["charges"].as_i64().expect("charges"),
            stats["requests"].as_i64().expect("requests"),
        )
    }

    /// `GET /v1/charges/{reference}`: the charge the processor made for a payment.
    pub(crate) fn charge(&self, reference: &str) -> serde_json::Value {
        send(
            self.port,
            "GET",
            &format!("/v1/charges/{reference}"),
            &[],
            "",
        )
        .expect("the charge")
        .json()
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Rate limits out of the way: these tests are about the processor.
const NO_LIMITS: &str = "[[policy]]\nname = \"payments\"\nscope = \"user\"\nalgorithm = \"sliding-window\"\n\
                         limit = 1000000\nwindow = \"1m\"\nendpoint = \"POST /api/v1/payments\"\n";

/// Pays with `key` until the answer is final (`201` or `402`), as a client that retries with
/// its key does; the final answer's status and body, and how many attempts it took.
fn pay_until_final(port: u16, key: &str, body: &str) -> (u16, String, u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempts = 0;
    loop {
        attempts += 1;
        if let Some(reply) = try_pay(port, ALICE, key, body) {
            match reply.status {
                201 | 402 => return (reply.status, reply.body, attempts),
                409 | 429 | 502 | 503 => {}
                other => panic!("{key}: unexpected {other}: {}", reply.body),
            }
        }
        assert!(Instant::now() < deadline, "{key}: no final answer in 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// With 20 % of answers lost after charging, 10 % of calls failing before charging and 10 %
/// declined, clients retrying with their keys across two servers get every payment exactly
/// once: charges (the processor's own count) = payment rows = keys, none left pending, and every
/// key's answers identical.
#[test]
fn through_a_faulty_processor_every_payment_is_charged_exactly_once() {
    let Some(services) =
        Isolated::new("through_a_faulty_processor_every_payment_is_charged_exactly_once")
    else {
        return;
    };
    let faults = [
        "--lose-rate",
        "0.2",
        "--fail-rate",
        "0.1",
        "--decline-rate",
        "0.1",
        "--seed",
        "42",
    ];
    let processor = MockProcessor::start(free_port(), &faults);
    let options = services
        .options()
        .env("PROCESSOR_URL", &processor.url())
        .toml(NO_LIMITS);
    let servers = [Server::start(&options), Server::start(&options)];
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    let keys: Vec<String> = (0..200).map(|_| unique("order")).collect();
    let body = payment("25.00", "card");

    let answers: BTreeMap<String, Vec<(u16, String)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = keys
            .chunks(25)
            .enumerate()
            .map(|(worker, chunk)| {
                let (ports, body) = (&ports, &body);
                scope.spawn(move || {
                    let mut answers = Vec::new();
                    for (n, key) in chunk.iter().enumerate() {
                        // The first attempt and the replay go to different servers.
                        let port = ports[(worker + n) % 2];
                        let (status, first, _) = pay_until_final(port, key, body);
                        let (again, replay, _) =
                            pay_until_final(ports[(worker + n + 1) % 2], key, body);
                        answers.push((key.clone(), vec![(status, first), (again, replay)]));
                    }
                    answers
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a client"))
            .collect()
    });

    let mut declined = 0;
    for (key, replies) in &answers {
        assert_eq!(replies[0], replies[1], "{key}: one answer, replayed");
        declined += usize::from(replies[0].0 == 402);
    }
    let keys = i64::try_from(keys.len()).expect("a count");
    let (charges, requests) = processor.stats();
    assert_eq!(charges, keys, "one charge per key");
    assert_eq!(
        services.count("SELECT count(*) FROM {schema}.payments"),
        keys
    );
    assert_eq!(
        services.count("SELECT count(*) FROM {schema}.payments WHERE status = 'pending'"),
        0
    );
    assert_eq!(
        services.count("SELECT count(*) FROM {schema}.payments WHERE status = 'failed'"),
        i64::try_from(declined).expect("a count")
    );
    assert!(
        requests > charges + charges / 5,
        "the faults were injected: {requests} requests for {charges} charges"
    );
    eprintln!(
        "exactly once through the faulty processor: {keys} keys, {charges} charges, {requests} processor requests, {declined} declined"
    );
}

/// The processor down: payments answer `502` (pending) until the breaker opens, then `503`
/// with `Retry-After`, and `/metrics` shows it open; the processor back, the breaker probes,
/// closes by itself, and the pending payments complete with one charge each.
#[test]
fn the_breaker_opens_while_the_processor_is_down_and_closes_when_it_returns() {
    let port = free_port();
    let config = format!(
        "{NO_LIMITS}[breaker]\nwindow_calls = 4\nminimum_calls = 4\nwait_in_open = \"1s\"\n\
         [processor]\nattempt_timeout = \"200ms\"\nmax_attempts = 2\ntimeout = \"1s\"\n"
    );
    let options = Options::default()
        .env("PROCESSOR_URL", &format!("http://127.0.0.1:{port}"))
        .toml(&config);
    let server = Server::start(&options);
    let body = payment("3.00", "card");
    let metric = |server: &Server| {
        let metrics = server.get("/metrics", None).body;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("payment_processor_circuit_state "))
            .map(str::to_owned)
            .expect("the breaker's state is exported")
    };

    let mut pending = Vec::new();
    for _ in 0..4 {
        let key = unique("order");
        let reply = server.pay(ALICE, &key, &body);
        assert_eq!(reply.status, 502, "{}", reply.body);
        pending.push(key);
    }
    let refused = server.pay(ALICE, &unique("order"), &body);
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.header("retry-after").is_some());
    assert_eq!(metric(&server), "1", "open");

    let processor = MockProcessor::start(port, &[]);
    std::thread::sleep(Duration::from_millis(1100));
    let mut fresh = Vec::new();
    for _ in 0..10 {
        let key = unique("order");
        assert_eq!(server.pay(ALICE, &key, &body).status, 201);
        fresh.push(key);
    }
    assert_eq!(metric(&server), "0", "closed again");
    for key in &pending {
        let (status, _, _) = pay_until_final(server.port, key, &body);
        assert_eq!(status, 201, "{key}: reconciled");
    }
    let (charges, _) = processor.stats();
    assert_eq!(
        charges,
        i64::try_from(pending.len() + fresh.len()).expect("a count")
    );
}

/// The client's W3C trace continues into the processor call: the charge the processor made
/// carries the client's trace id, under the server's own parent id.
#[test]
fn the_clients_trace_continues_into_the_processor_call() {
    let processor = MockProcessor::start(free_port(), &[]);
    let options = Options::default().env("PROCESSOR_URL", &processor.url());
    let server = Server::start(&options);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let reply = try_pay_with(
        server.port,
        ALICE,
        &unique("order"),
        &payment("4.00", "card"),
        &[("traceparent", &traceparent)],
    )
    .expect("an answer");
    assert_eq!(reply.status, 201, "{}", reply.body);
    let txn = reply.json()["transaction_id"]
        .as_str()
        .expect("a transaction id")
        .to_owned();
    let charge = processor.charge(&txn);
    let sent = charge["traceparent"].as_str().expect("a traceparent");
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", trace, "01"),
        "{sent}"
    );
    assert_ne!(parts[2], "00f067aa0ba902b7", "the server's own parent id");
}

/// `mock-processor` is a server too: a client that never finishes its request head is closed
/// after the header timeout, and past its connection cap a new connection is closed at once,
/// so 2 000 half-sent requests cannot hold it.
#[test]
fn the_mock_processor_bounds_what_a_client_holds() {
    use std::io::Write;
    let processor = MockProcessor::start(
        free_port(),
        &["--header-timeout", "500ms", "--max-connections", "50"],
    );
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..60 {
        let mut stream = TcpStream::connect(("127.0.0.1", processor.port)).expect("connect");
        let _ = stream.write_all(b"POST /v1/charges HTTP/1.1\r\nHost: x\r\n");
        held.push(stream);
    }
    // Each is closed by the server: the ten past the cap at once, the rest at the timeout.
    let mut closed_at = Vec::new();
    for stream in &mut held {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut byte = [0_u8; 64];
        let still_open = matches!(
            stream.read(&mut byte),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        );
        assert!(!still_open, "still open after {:?}", started.elapsed());
        closed_at.push(started.elapsed());
    }
    drop(held);
    eprintln!(
        "mock-processor: 60 half-sent requests, all closed within {:?}",
        closed_at.last()
    );
    // Served as usual afterwards.
    let (charges, _) = processor.stats();
    assert_eq!(charges, 0);
}
