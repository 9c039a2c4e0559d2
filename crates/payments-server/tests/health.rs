//! The server binary, started as a real process on a real port, answers `GET /health` and says
//! what is still to come for the rest of the contract.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    start_with(&[])
}

fn start_with(env: &[(&str, &str)]) -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_payments-server"))
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_LEVEL", "warn")
        .env_remove("API_KEYS")
        .env_remove("API_KEY")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .spawn()
        .expect("the server starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the server did not listen within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Server { child, port }
}

/// One HTTP/1.1 request; returns the status line, the headers and the body.
fn request(port: u16, method: &str, path: &str) -> (String, String, String) {
    request_with(port, method, path, "")
}

/// A request with extra header lines (each ending in `\r\n`).
fn request_with(
    port: u16,
    method: &str,
    path: &str,
    extra_headers: &str,
) -> (String, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extra_headers}Connection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (
        status.to_owned(),
        headers.to_ascii_lowercase(),
        body.to_owned(),
    )
}

#[test]
fn health_and_the_rest_of_the_contract() {
    let server = start();

    let (status, headers, body) = request(server.port, "GET", "/health");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("content-type: application/json"),
        "{headers}"
    );
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["status"], "ok");
    assert_eq!(json["services"]["redis"]["status"], "disabled");
    assert_eq!(json["services"]["database"]["status"], "disabled");

    let (status, headers, _) = request(server.port, "POST", "/api/v1/payments");
    assert_eq!(status, "HTTP/1.1 401 Unauthorized", "no key");
    assert!(headers.contains("www-authenticate: bearer"), "{headers}");
    let (status, _, _) = request_with(
        server.port,
        "POST",
        "/api/v1/payments",
        "Authorization: Bearer wrong\r\n",
    );
    assert_eq!(status, "HTTP/1.1 401 Unauthorized", "wrong key");

    let dev_key = "Authorization: Bearer test-api-key\r\n";
    let (status, headers, body) = request_with(server.port, "POST", "/api/v1/payments", dev_key);
    assert_eq!(status, "HTTP/1.1 501 Not Implemented");
    assert!(
        headers.contains("content-type: application/problem+json"),
        "{headers}"
    );
    let problem: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(problem["status"], 501);
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("issue #5")),
        "{body}"
    );

    let (status, _, _) = request_with(server.port, "GET", "/api/v1/payments/txn_123", dev_key);
    assert_eq!(status, "HTTP/1.1 501 Not Implemented");

    // The published retry policy is public, and exactly tollgate-retry's RetryConfig.
    let (status, _, body) = request(server.port, "GET", "/api/v1/retry-config");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let config: tollgate_retry::config::RetryConfig =
        serde_json::from_str(&body).expect("a RetryConfig");
    assert_eq!(config, tollgate_retry::config::RetryConfig::default());
    let (status, _, _) = request(server.port, "GET", "/nope");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, headers, _) = request(server.port, "DELETE", "/health");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(headers.contains("allow: get"), "{headers}");
}

#[test]
fn configured_keys_replace_the_development_key() {
    let server = start_with(&[("API_KEYS", "k-alice:alice,k-bob:bob")]);
    let (status, _, _) = request_with(
        server.port,
        "GET",
        "/api/v1/rate-limits",
        "Authorization: Bearer test-api-key\r\n",
    );
    assert_eq!(status, "HTTP/1.1 401 Unauthorized");
    let (status, _, _) = request_with(
        server.port,
        "GET",
        "/api/v1/rate-limits",
        "Authorization: Bearer k-bob\r\n",
    );
    assert_eq!(status, "HTTP/1.1 501 Not Implemented");
}

#[test]
fn invalid_configuration_is_a_clear_start_up_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_payments-server"))
        .env("API_KEYS", "no-colon-here")
        .env("BIND_ADDR", "127.0.0.1:0")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("API_KEYS entry 1"), "{stderr}");
}
