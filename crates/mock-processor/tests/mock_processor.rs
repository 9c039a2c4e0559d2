//! `mock-processor` as a real process on a real port: idempotent charges, each fault, and
//! charges that survive a restart on PostgreSQL (with `TEST_DATABASE_URL`).

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A processor process, killed when dropped.
struct Processor {
    child: Child,
    port: u16,
}

impl Drop for Processor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Processor {
    fn start(args: &[&str]) -> Processor {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mock-processor"))
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
            assert!(Instant::now() < deadline, "not listening after 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Processor { child, port }
    }

    /// One request; `None` if the connection closed unanswered or timed out.
    fn send(&self, method: &str, path: &str, key: Option<&str>, body: &str) -> Option<Reply> {
        self.send_within(method, path, key, body, Duration::from_secs(10))
    }

    fn send_within(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: &str,
        timeout: Duration,
    ) -> Option<Reply> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{}{path}", self.port))
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let mut response = agent.run(request.body(body.to_owned()).ok()?).ok()?;
        let text = response.body_mut().read_to_string().ok()?;
        Some(Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            json: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        })
    }

    fn charge(&self, key: &str, amount: i64) -> Option<Reply> {
        let body = format!(r#"{{"amount":{amount},"currency":"USD","payment_method":"card"}}"#);
        self.send("POST", "/v1/charges", Some(key), &body)
    }

    fn stats(&self) -> (i64, i64) {
        let stats = self.send("GET", "/v1/stats", None, "").expect("stats").json;
        (
            stats["charges"].as_i64().expect("charges"),
            stats["requests"].as_i64().expect("requests"),
        )
    }
}

struct Reply {
    status: u16,
    headers: http::HeaderMap,
    json: serde_json::Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[test]
fn a_key_charges_once_and_replays_and_another_body_is_refused() {
    let processor = Processor::start(&[]);
    let first = processor.charge("ref-a", 1234).expect("an answer");
    assert_eq!(first.status, 201);
    assert_eq!(first.json["status"], "succeeded");
    assert_eq!(first.json["reference"], "ref-a");
    assert_eq!(first.json["amount"], 1234);
    let again = processor.charge("ref-a", 1234).expect("an answer");
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json["id"], first.json["id"], "the same charge");
    assert_eq!(
        processor.charge("ref-a", 999).expect("an answer").status,
        422
    );

    let found = processor
        .send("GET", "/v1/charges/ref-a", None, "")
        .expect("an answer");
    assert_eq!((found.status, &found.json["id"]), (200, &first.json["id"]));
    let missing = processor
        .send("GET", "/v1/charges/ref-b", None, "")
        .expect("an answer");
    assert_eq!(missing.status, 404);
    let declined = processor
        .send(
            "POST",
            "/v1/charges",
            Some("ref-c"),
            r#"{"amount":5,"currency":"EUR","payment_method":"test_decline"}"#,
        )
        .expect("an answer");
    assert_eq!(declined.status, 201);
    assert_eq!(declined.json["status"], "declined");
    assert_eq!(declined.json["decline_code"], "card_declined");
    let invalid = processor
        .send("POST", "/v1/charges", Some("ref-d"), r#"{"amount":-5}"#)
        .expect("an answer");
    assert_eq!(invalid.status, 400);
    let unkeyed = processor
        .send("POST", "/v1/charges", None, r#"{"amount":5}"#)
        .expect("an answer");
    assert_eq!(unkeyed.status, 400);
    assert_eq!(processor.stats(), (2, 8), "two charges, eight requests");
}

#[test]
fn a_lost_answer_was_charged_and_the_same_key_finds_it() {
    let processor = Processor::start(&["--lose-rate", "1"]);
    assert!(processor.charge("ref-lost", 100).is_none(), "no answer");
    assert_eq!(processor.stats().0, 1, "but charged");
    let retry = processor.charge("ref-lost", 100).expect("a replay");
    assert_eq!(retry.status, 201);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(processor.stats().0, 1, "charged once");
}

#[test]
fn failures_and_throttling_charge_nothing() {
    let failing = Processor::start(&["--fail-rate", "1"]);
    for n in 0..10 {
        let reply = failing.charge(&format!("ref-{n}"), 100).expect("an answer");
        assert!([500, 503].contains(&reply.status), "{}", reply.status);
    }
    assert_eq!(failing.stats().0, 0);

    let throttling = Processor::start(&["--throttle-rate", "1", "--retry-after", "3"]);
    let reply = throttling.charge("ref-t", 100).expect("an answer");
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("3"));
    assert_eq!(throttling.stats().0, 0);
}

#[test]
fn a_slow_answer_outlives_the_caller_and_a_duplicate_in_flight_is_told_to_wait() {
    let processor = Processor::start(&["--slow-rate", "1", "--slow-latency", "3s"]);
    let body = r#"{"amount":100,"currency":"USD","payment_method":"card"}"#;
    let timeout = Duration::from_millis(300);
    let late = processor.send_within("POST", "/v1/charges", Some("ref-s"), body, timeout);
    assert!(late.is_none(), "past the caller's deadline");
    assert_eq!(processor.stats().0, 1, "charged before the slow answer");
    let duplicate = processor.charge("ref-s", 100).expect("an answer");
    assert_eq!(duplicate.status, 409);
    assert!(duplicate.header("retry-after").is_some());
    let found = processor
        .send("GET", "/v1/charges/ref-s", None, "")
        .expect("an answer");
    assert_eq!(found.status, 200);
}

#[test]
fn bad_options_name_the_option() {
    let output = Command::new(env!("CARGO_BIN_EXE_mock-processor"))
        .args(["--lose-rate", "2"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--lose-rate"), "{stderr}");
}

/// With `TEST_DATABASE_URL`: a charge made before a restart is found, and replayed, after it.
#[test]
fn charges_in_postgres_survive_a_restart() {
    let Some(url) = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        eprintln!(
            "SKIPPED charges_in_postgres_survive_a_restart: needs PostgreSQL; set TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres to run it"
        );
        return;
    };
    let schema = format!("tg_mock_{}", std::process::id());
    let args = ["--database-url", url.as_str(), "--schema", schema.as_str()];
    let first = Processor::start(&args);
    let charged = first.charge("ref-pg", 700).expect("an answer");
    assert_eq!(charged.status, 201);
    drop(first);
    let second = Processor::start(&args);
    let found = second
        .send("GET", "/v1/charges/ref-pg", None, "")
        .expect("an answer");
    assert_eq!(
        (found.status, &found.json["id"]),
        (200, &charged.json["id"])
    );
    let replayed = second.charge("ref-pg", 700).expect("an answer");
    assert_eq!(replayed.json["id"], charged.json["id"]);
    assert_eq!(second.stats().0, 1);
    drop(second);
    drop_schema(&url, &schema);
}

fn drop_schema(url: &str, schema: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL is reachable");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .expect("the schema is dropped");
    });
}
