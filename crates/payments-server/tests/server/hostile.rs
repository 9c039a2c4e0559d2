//! Hundreds of malformed requests: the server answers each with a 4xx (problem+json whenever the
//! request reached it as HTTP), never a 5xx, stays up, and still serves valid requests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{ALICE, Options, Server, payment, unique};

/// High limits: the point is to reach the parsers, not the limiter.
const LIMITS: &str = r#"
[processor]
latency = "1ms"
[[policy]]
name = "per-user"
scope = "user"
algorithm = "sliding-window"
limit = 100000
window = "60s"
"#;

/// Sends raw bytes; returns the status (None if the server closed without answering) and the
/// response text.
fn raw(port: u16, bytes: &[u8]) -> (Option<u16>, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|s| s.parse().ok());
    (status, text)
}

fn request(head_lines: &[String], body: &[u8]) -> Vec<u8> {
    let mut bytes = b"POST /api/v1/payments HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
    for line in head_lines {
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    bytes.extend_from_slice(body);
    bytes
}

fn good_headers(key: &str) -> Vec<String> {
    vec![
        format!("Authorization: Bearer {ALICE}"),
        "Content-Type: application/json".to_owned(),
        format!("Idempotency-Key: {key}"),
    ]
}

/// A case: its name and the bytes sent.
type Case = (String, Vec<u8>);

#[test]
fn malformed_requests_get_4xx_never_5xx() {
    let server = Server::start(&Options::default().toml(LIMITS));
    let body = payment("1.00", "card").into_bytes();
    let mut cases = body_cases();
    cases.extend(header_cases(&body));
    cases.extend(framing_and_path_cases());
    cases.extend(mutations(&body));
    answer_each_without_a_5xx(&server, cases);
    // And still useful.
    server
        .pay(ALICE, &unique("after"), &payment("1.00", "card"))
        .expect(201);
}

/// Bodies under the 64 KiB limit, so they reach the JSON parsers.
fn body_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    // Under the 64 KiB limit, so they reach the JSON parsers.
    let deep_array = "[".repeat(60_000);
    let deep_object = "{\"a\":".repeat(12_000);
    let huge_number = format!(
        "{{\"amount\": {}, \"currency\": \"USD\", \"payment_method\": \"c\"}}",
        "9".repeat(20_000)
    );
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("empty", b"".to_vec()),
        ("truncated", br#"{"amount": 1, "curr"#.to_vec()),
        ("missing value", br#"{"amount": }"#.to_vec()),
        ("array", b"[]".to_vec()),
        ("null", b"null".to_vec()),
        ("string", br#""pay me""#.to_vec()),
        ("exponent overflow", br#"{"amount": 1e999, "currency": "USD", "payment_method": "c"}"#.to_vec()),
        ("negative zero", br#"{"amount": -0.0, "currency": "USD", "payment_method": "c"}"#.to_vec()),
        ("huge number", huge_number.into_bytes()),
        ("deep array", deep_array.into_bytes()),
        ("deep object", deep_object.into_bytes()),
        ("invalid utf-8", b"{\"amount\": 1, \"currency\": \"\xff\xfe\", \"payment_method\": \"c\"}".to_vec()),
        ("nul bytes", b"{\"amount\": 1,\0 \"currency\": \"USD\"}".to_vec()),
        ("bom", b"\xef\xbb\xbf{\"amount\": 1, \"currency\": \"USD\", \"payment_method\": \"c\"}".to_vec()),
        ("duplicate fields", br#"{"amount": 1, "amount": 2, "currency": "USD", "payment_method": "c"}"#.to_vec()),
        ("metadata not strings", br#"{"amount": 1, "currency": "USD", "payment_method": "c", "metadata": {"a": {"b": 1}}}"#.to_vec()),
        ("lone surrogate", br#"{"amount": 1, "currency": "USD", "payment_method": "\ud800"}"#.to_vec()),
        ("type confusion", br#"{"amount": [1], "currency": 840, "payment_method": null}"#.to_vec()),
    ];
    for (name, body) in bodies {
        cases.push((
            format!("body: {name}"),
            request(&good_headers(&unique("hostile")), &body),
        ));
    }

    cases
}

/// Idempotency keys, content types, authorizations and header bytes around a valid `body`.
fn header_cases(body: &[u8]) -> Vec<Case> {
    let mut cases = Vec::new();
    let key_values = [
        String::new(),
        "short".to_owned(),
        "k".repeat(300),
        "\"unterminated-quoted-key".to_owned(),
        "\"bad\\escape-0123456789\"".to_owned(),
        "a-valid-looking-key-1, another-valid-key-2".to_owned(),
        "spaces are not allowed here".to_owned(),
        "ключ-не-ascii-0123456789".to_owned(),
    ];
    for value in key_values {
        let headers = vec![
            format!("Authorization: Bearer {ALICE}"),
            "Content-Type: application/json".to_owned(),
            format!("Idempotency-Key: {value}"),
        ];
        cases.push((format!("key {value:?}"), request(&headers, body)));
    }
    let mut duplicated = good_headers(&unique("hostile"));
    duplicated.push(format!("Idempotency-Key: {}", unique("other")));
    cases.push((
        "duplicate Idempotency-Key".into(),
        request(&duplicated, body),
    ));
    for content_type in [
        "text/plain",
        "application/jsonx",
        "application/json; charset=utf-16",
        "",
        "*/*",
    ] {
        let headers = vec![
            format!("Authorization: Bearer {ALICE}"),
            format!("Content-Type: {content_type}"),
            format!("Idempotency-Key: {}", unique("hostile")),
        ];
        cases.push((
            format!("content type {content_type:?}"),
            request(&headers, body),
        ));
    }
    for auth in [
        "Bearer",
        "Bearer  ",
        "bearer alice-test-key-0001",
        "Basic YWxpY2U6eA==",
        "Bearer alice-test-key-0001x",
    ] {
        let headers = vec![
            format!("Authorization: {auth}"),
            "Content-Type: application/json".to_owned(),
            format!("Idempotency-Key: {}", unique("hostile")),
        ];
        cases.push((format!("authorization {auth:?}"), request(&headers, body)));
    }
    // Non-UTF-8 header bytes.
    let mut bytes = b"POST /api/v1/payments HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer \xff\xfe\r\nIdempotency-Key: \xc3\x28-0123456789abcdef\r\nContent-Type: application/json\r\n".to_vec();
    bytes.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    bytes.extend_from_slice(body);
    cases.push(("binary header values".into(), bytes));

    cases
}

/// Framing the server must refuse, and hostile paths and queries.
fn framing_and_path_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    cases.push((
        "two content lengths".into(),
        b"POST /api/v1/payments HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(),
    ));
    cases.push((
        "bad chunk".into(),
        b"POST /api/v1/payments HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec(),
    ));
    cases.push((
        "body shorter than its length".into(),
        b"POST /api/v1/payments HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}".to_vec(),
    ));
    cases.push((
        "not HTTP".into(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
    ));
    cases.push((
        "long path".into(),
        format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(16 * 1024)).into_bytes(),
    ));
    cases.push((
        "huge header".into(),
        format!(
            "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "b".repeat(512 * 1024)
        )
        .into_bytes(),
    ));
    let auth = format!("Authorization: Bearer {ALICE}");
    for target in [
        "/api/v1/payments/%00",
        "/api/v1/payments/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/payments/txn_%ff%fe",
        "/api/v1/audit-logs?limit=99999999999999999999999",
        "/api/v1/audit-logs?limit=-1",
        "/api/v1/audit-logs?cursor=%ff%00",
        "/api/v1/audit-logs?cursor=00000000-0000-0000-0000-000000000000&limit=1",
        "/api/v1/simulate-concurrent?concurrent_count=1e3",
        "/api/v1/simulate-concurrent?concurrent_count=%ff",
        "//api/v1/payments",
        "/api/v1/payments?x=1",
        "*",
    ] {
        let method = if target.contains("simulate") {
            "POST"
        } else {
            "GET"
        };
        cases.push((
            format!("{method} {target}"),
            format!("{method} {target} HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}").into_bytes(),
        ));
    }

    cases
}

/// A valid request truncated, with bytes flipped or junk spliced in, reproducible from the seed.
fn mutations(body: &[u8]) -> Vec<Case> {
    let mut cases = Vec::new();
    let valid = request(&good_headers("mutation-key-0123456789"), body);
    let mut rng = fastrand::Rng::with_seed(0x7011_6a7e);
    for i in 0..300 {
        let mut mutated = valid.clone();
        match i % 3 {
            0 => mutated.truncate(rng.usize(1..valid.len())),
            1 => {
                for _ in 0..rng.usize(1..8) {
                    let at = rng.usize(..mutated.len());
                    mutated[at] = rng.u8(..);
                }
            }
            _ => {
                let at = rng.usize(..mutated.len());
                let junk: Vec<u8> = (0..rng.usize(1..64)).map(|_| rng.u8(..)).collect();
                mutated.splice(at..at, junk);
            }
        }
        cases.push((format!("mutation {i}"), mutated));
    }

    cases
}

/// Sends each case: an answer is never a 5xx, and a problem+json when it is ours; the server
/// stays up after every one, and answers most.
fn answer_each_without_a_5xx(server: &Server, cases: Vec<Case>) {
    let total = cases.len();
    let mut answered = 0;
    let mut statuses = std::collections::BTreeMap::<Option<u16>, u32>::new();
    for (name, bytes) in cases {
        let (status, text) = raw(server.port, &bytes);
        *statuses.entry(status).or_default() += 1;
        if !name.starts_with("mutation") {
            eprintln!("CASE {name} -> {status:?}");
        }
        if let Some(status) = status {
            answered += 1;
            assert!(status < 500, "{name}: {text}");
            // A mutation may still be a valid payment (a flipped byte in the description).
            let ours = text.to_ascii_lowercase().contains("x-request-id:");
            if status >= 400 && ours {
                assert!(
                    text.to_ascii_lowercase()
                        .contains("content-type: application/problem+json"),
                    "{name}: {text}"
                );
            }
        }
        // Still alive after every one.
        assert_eq!(server.get("/health", None).status, 200, "after {name}");
    }
    // For docs/reliability.md: how the cases were answered (None: closed without an answer).
    let _ = writeln!(
        std::io::stderr(),
        "hostile input: {total} requests, statuses {statuses:?}"
    );
    assert!(
        answered * 2 > total,
        "most malformed requests get an answer: {answered}/{total}"
    );
}
