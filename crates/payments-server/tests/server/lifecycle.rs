//! Start-up errors, timeouts, the circuit breaker and graceful shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{ALICE, Options, Server, payment, unique};

#[test]
fn invalid_configuration_is_a_start_up_error_naming_the_field() {
    for (env, toml, named) in INVALID_CONFIGURATIONS {
        let stderr = refused_start(env, toml);
        assert!(stderr.contains(named), "{named} not in {stderr}");
    }
}

/// Settings start-up refuses: the environment, the TOML file, and what the error must name.
type Invalid = (
    &'static [(&'static str, &'static str)],
    Option<&'static str>,
    &'static str,
);

const INVALID_CONFIGURATIONS: [Invalid; 19] = [
    (
        &[("API_KEYS", "k1-0123456789abcdef:alice,oops")],
        None,
        "API_KEYS entry 2",
    ),
    (&[("LOG_LEVEL", "loud=[")], None, "LOG_LEVEL"),
    (&[], Some("[timeouts]\nrequest = \"soon\""), "soon"),
    (
        &[],
        Some("[processor]\ndecline_rate = 3.0"),
        "processor.decline_rate",
    ),
    (&[("REDIS_URL", "not a url")], None, "REDIS_URL"),
    (
        &[],
        Some("[database]\npool_size = 0"),
        "database.pool_size must be at least 1",
    ),
    (
        &[],
        Some("[redis]\npool_timeout = \"0s\""),
        "redis.pool_timeout must be more than zero",
    ),
    // A key setting that names no key never falls back to the public development key.
    (
        &[("API_KEYS", "")],
        None,
        "API_KEYS is set but names no key",
    ),
    (&[("API_KEYS", " , ,")], None, "API_KEYS entry 1 is empty"),
    (&[("API_KEY", "")], None, "API_KEY is set but empty"),
    (
        &[(
            "API_KEYS",
            "k1-0123456789abcdef:alice,k1-0123456789abcdef:bob",
        )],
        None,
        "the same key is given twice",
    ),
    // A short key is a guessable one.
    (
        &[("API_KEYS", "k:alice")],
        None,
        "API_KEYS entry 1: a key must be 16–256 visible ASCII characters",
    ),
    (
        &[("BIND_ADDR", "0.0.0.0:0")],
        None,
        "only accepted on loopback or with --dev",
    ),
    (
        &[],
        Some("[idempotency]\nttl = \"30s\""),
        "idempotency.ttl (30s) must be longer than idempotency.lease",
    ),
    (
        &[("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")],
        None,
        "DATABASE_URL",
    ),
    (
        &[
            ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"),
            ("KEYS_FILE", "/tmp/k.json"),
        ],
        None,
        "KEYS_FILE and DATABASE_URL are both set",
    ),
    (
        &[],
        Some("[tier.a]\nusers = [\"alice\"]\n[tier.b]\nusers = [\"alice\"]"),
        "tier.b.users: user `alice` is also in tier `a`",
    ),
    (
        &[],
        Some(
            "[[policy]]\nname = \"m\"\nscope = \"dimension\"\ndimension = \"merchant\"\nalgorithm = \"sliding-window\"\nlimit = 1\nwindow = \"1s\"",
        ),
        "[dimension.merchant]",
    ),
    (&[], Some("[log]\nlevel = \"loud=[\""), "log.level"),
];

/// Starts the server with `env` and the TOML text `toml`, which must refuse to start: its
/// standard error.
fn refused_start(env: &[(&str, &str)], toml: Option<&str>) -> String {
    let file = std::env::temp_dir().join(format!("{}.toml", unique("bad")));
    let mut command = Command::new(env!("CARGO_BIN_EXE_payments-server"));
    command
        .env("BIND_ADDR", "127.0.0.1:0")
        .env_remove("TOLLGATE_CONFIG")
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .env_remove("KEYS_FILE")
        .env_remove("API_KEYS")
        .env_remove("API_KEY")
        .env_remove("TOLLGATE_DEV")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(text) = toml {
        std::fs::write(&file, text).expect("write");
        command.env("TOLLGATE_CONFIG", &file);
    }
    let output = command.output().expect("runs");
    let _ = std::fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "started anyway: {env:?} {toml:?}");
    stderr
}

#[test]
fn a_key_may_contain_colons() {
    let server = Server::start(&Options::default().env(
        "API_KEYS",
        "sk:live:abc123SECRET0000:alice,k2-0123456789abcdef:bob",
    ));
    server
        .get("/api/v1/rate-limits", Some("sk:live:abc123SECRET0000"))
        .expect(200);
    server.get("/api/v1/rate-limits", Some("sk")).expect(401);
}

#[test]
fn development_mode_accepts_the_test_key() {
    let server = Server::start(&Options {
        development: true,
        ..Options::default()
    });
    server
        .get("/api/v1/rate-limits", Some("test-api-key"))
        .expect(200);
    server.get("/api/v1/rate-limits", Some(ALICE)).expect(401);
}

#[test]
fn a_stalled_client_is_disconnected_after_the_header_timeout() {
    let server = Server::start(&Options::default().toml("[timeouts]\nheader_read = \"300ms\""));
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: loc")
        .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "held for {waited:?}");
    // hyper answers 408 where it can, or just closes.
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[test]
fn an_open_circuit_refuses_payments_before_recording_anything() {
    let server = Server::start(&Options::default().toml(
        r#"
        [processor]
        latency = "1ms"
        failure_rate = 1.0
        [breaker]
        window_calls = 2
        minimum_calls = 2
        failure_rate_threshold = 50
        wait_in_open = "60s"
        "#,
    ));
    server
        .pay(ALICE, &unique("order"), &payment("1.00", "card"))
        .expect(502);
    server
        .pay(ALICE, &unique("order"), &payment("1.00", "card"))
        .expect(502);
    let refused = server.pay(ALICE, &unique("order"), &payment("1.00", "card"));
    refused.expect(503);
    let wait: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((50..=60).contains(&wait), "{wait}");
    let metrics = server.get("/metrics", None).body;
    assert!(
        metrics.contains("payment_processor_circuit_state 1"),
        "{metrics}"
    );
}

#[test]
fn sigterm_drains_requests_in_flight_then_exits() {
    let mut server = Server::start(&Options::default().toml("[processor]\nlatency = \"1s\""));
    let port = server.port;
    let key = unique("order");
    let in_flight = std::thread::spawn(move || {
        crate::support::try_pay(port, ALICE, &key, &payment("3.00", "card"))
            .expect("an answer before the exit")
    });
    std::thread::sleep(Duration::from_millis(300));
    server.signal("TERM");
    let answered = in_flight.join().expect("the request");
    answered.expect(201);
    let status = server.exit_status();
    assert!(status.success(), "{status}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "no longer listening"
    );
}

#[test]
fn sigterm_fails_readiness_first_while_payments_still_succeed() {
    let pre_drain = Duration::from_secs(2);
    let mut server = Server::start(&Options::default().toml("[timeouts]\npre_drain = \"2s\""));
    server.get("/ready", None).expect(200);
    let signalled = Instant::now();
    server.signal("TERM");
    // The signal is handled on the server's own time.
    let ready = loop {
        let ready = server.get("/ready", None);
        if ready.status == 503 || signalled.elapsed() > Duration::from_secs(1) {
            break ready;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    ready.expect(503);
    assert_eq!(ready.json()["draining"], true, "{ready:?}");
    // Within the payments limit (10 a minute per user), spread over the pre-drain.
    let mut paid = 0;
    while paid < 8 && signalled.elapsed() < pre_drain - Duration::from_millis(300) {
        server
            .pay(ALICE, &unique("order"), &payment("1.00", "card"))
            .expect(201);
        paid += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(paid > 0);
    let status = server.exit_status();
    assert!(status.success(), "{status}");
    assert!(
        signalled.elapsed() >= pre_drain,
        "the listener stayed open for the pre-drain ({:?})",
        signalled.elapsed()
    );
}

#[test]
fn sigint_skips_the_pre_drain() {
    let mut server = Server::start(&Options::default().toml("[timeouts]\npre_drain = \"30s\""));
    let signalled = Instant::now();
    server.signal("INT");
    let status = server.exit_status();
    assert!(status.success(), "{status}");
    assert!(signalled.elapsed() < Duration::from_secs(10));
}

/// Alice's payment with `key`, declaring a 100-byte body of which only `sent` arrives, with
/// `headers` (whole lines) added: the answer, until the server closes, and how long it took.
fn partial_payment(server: &Server, key: &str, headers: &str, sent: &str) -> (String, Duration) {
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "POST /api/v1/payments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\nContent-Type: application/json\r\nIdempotency-Key: {key}\r\n{headers}Content-Length: 100\r\n\r\n{sent}"
    )
    .expect("write");
    let started = Instant::now();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    (answer, started.elapsed())
}

#[test]
fn a_client_too_slow_to_send_its_body_gets_408() {
    let server = Server::start(&Options::default().toml("[timeouts]\nrequest = \"700ms\""));
    let key = unique("order");
    let (answer, took) = partial_payment(&server, &key, "Connection: close\r\n", "{\"amount\"");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(took < Duration::from_secs(5));
    // Nothing was claimed: the same key is free for the complete request.
    server
        .pay(ALICE, &key, &payment("1.00", "card"))
        .expect(201);
}

#[test]
fn a_rate_limited_payment_is_answered_without_reading_its_body() {
    let policy = "[[policy]]\nname = \"payments\"\nscope = \"user\"\n\
                  algorithm = \"sliding-window\"\nlimit = 1\nwindow = \"1h\"\n\
                  endpoint = \"POST /api/v1/payments\"\n";
    let server = Server::start(
        &Options::default().toml(&format!("[timeouts]\nrequest = \"20s\"\n{policy}")),
    );
    server
        .pay(ALICE, &unique("order"), &payment("1.00", "card"))
        .expect(201);
    // Over the limit: a body that never arrives, with and without waiting for 100 Continue.
    for expect in ["", "Expect: 100-continue\r\n"] {
        let (answer, took) = partial_payment(&server, &unique("order"), expect, "");
        assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
        assert!(!answer.contains("100 Continue"), "{answer}");
        // Answered from the head (the read ends because the server closes the connection
        // whose body it did not read), not after the 20 s the body had.
        assert!(took < Duration::from_secs(5), "{answer}");
    }
}

#[test]
fn the_healthcheck_subcommand_asks_ready() {
    let server = Server::start(&Options::default());
    let check = |bind: String| {
        Command::new(env!("CARGO_BIN_EXE_payments-server"))
            .arg("healthcheck")
            .env("BIND_ADDR", bind)
            .env_remove("API_KEYS")
            .output()
            .expect("runs")
    };
    let ready = check(format!("127.0.0.1:{}", server.port));
    assert!(ready.status.success(), "{ready:?}");
    // An unspecified address (a container's) means this machine.
    let ready = check(format!("0.0.0.0:{}", server.port));
    assert!(ready.status.success(), "{ready:?}");
    let nobody = check(format!("127.0.0.1:{}", crate::support::free_port()));
    assert!(!nobody.status.success());
    let stderr = String::from_utf8_lossy(&nobody.stderr);
    assert!(stderr.contains("payments-server healthcheck"), "{stderr}");
}

/// Every log line of a request carries its request id, route, user and, when the caller sent a
/// valid W3C `traceparent`, its trace id.
#[test]
fn log_lines_carry_the_request_and_the_callers_trace() {
    let port = crate::support::free_port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_payments-server"))
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("API_KEYS", format!("{ALICE}:alice"))
        .env("LOG_LEVEL", "info")
        .env("LOG_FORMAT", "json")
        .env_remove("TOLLGATE_CONFIG")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the server starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "not listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "GET /api/v1/rate-limits HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: Bearer {ALICE}\r\nX-Request-Id: req-log-test-1\r\n\
         traceparent: 00-{trace}-00f067aa0ba902b7-01\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let _ = Command::new("kill")
        .args(["-INT", &server.id().to_string()])
        .status();
    let _ = server.wait();
    let mut logs = String::new();
    if let Some(mut out) = server.stdout.take() {
        let _ = out.read_to_string(&mut logs);
    }
    let line = logs
        .lines()
        .find(|line| line.contains("req-log-test-1"))
        .unwrap_or_else(|| panic!("no line with the request id in {logs}"));
    let json: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    let span = &json["span"];
    assert_eq!(span["trace_id"], trace, "{line}");
    assert_eq!(span["user.id"], "alice", "{line}");
    assert_eq!(span["http.route"], "/api/v1/rate-limits", "{line}");
    assert_eq!(span["http.request.method"], "GET", "{line}");
    assert_eq!(json["http.response.status_code"], 200, "{line}");
}

/// SIGHUP puts the configuration file's policy table in force without a restart, keeping what
/// each caller has used; a file that does not validate changes nothing, and the server serves on.
#[test]
fn sighup_reloads_the_policy_table_and_a_bad_file_changes_nothing() {
    let payments = |limit: u32| {
        format!(
            "[[policy]]\nname = \"payments\"\nscope = \"user\"\nalgorithm = \"sliding-window\"\n\
             limit = {limit}\nwindow = \"1h\"\nendpoint = \"POST /api/v1/payments\"\n"
        )
    };
    let mut server = Server::start(&Options::default().toml(&payments(1)));
    let pay = |server: &Server| server.pay(ALICE, &unique("order"), &payment("1.00", "card"));
    pay(&server).expect(201);
    pay(&server).expect(429);

    server.rewrite_config(&payments(3));
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let paid = pay(&server);
        if paid.status == 201 {
            break;
        }
        paid.expect(429);
        assert!(
            Instant::now() < deadline,
            "the new table was never in force"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A limit of zero does not validate: the table of three stays, with two used.
    server.rewrite_config(&payments(0));
    server.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.child.try_wait().expect("a status").is_none(),
        "still running"
    );
    pay(&server).expect(201);
    let refused = pay(&server);
    refused.expect(429);
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"payments\";q=3;w=3600")
    );
    let metrics = server.get("/metrics", None).body;
    for line in [
        "config_reloads_total{result=\"success\"} 1",
        "config_reloads_total{result=\"failure\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert!(metrics.contains("config_last_reload_success_timestamp_seconds "));
}

/// `payments-server check-config` validates a file as start-up would, without starting
/// anything: exit 0 and what is in force, or exit 1 and the error naming the setting.
#[test]
fn check_config_validates_a_file_without_starting() {
    let dir = std::env::temp_dir();
    let good = dir.join(format!("{}.toml", unique("check-good")));
    let bad = dir.join(format!("{}.toml", unique("check-bad")));
    std::fs::write(&good, "[timeouts]\nrequest = \"5s\"\n").expect("write");
    std::fs::write(&bad, "[processor]\ndecline_rate = 2.0\n").expect("write");
    let check = |file: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_payments-server"))
            .args(["check-config", "--config"])
            .arg(file)
            .env_remove("TOLLGATE_CONFIG")
            .output()
            .expect("runs")
    };
    let valid = check(&good);
    assert!(valid.status.success(), "{valid:?}");
    assert!(String::from_utf8_lossy(&valid.stdout).contains("valid"));
    let invalid = check(&bad);
    assert_eq!(invalid.status.code(), Some(1), "{invalid:?}");
    let said = String::from_utf8_lossy(&invalid.stderr);
    assert!(said.contains("processor.decline_rate"), "{said}");
    let _ = std::fs::remove_file(good);
    let _ = std::fs::remove_file(bad);
}
