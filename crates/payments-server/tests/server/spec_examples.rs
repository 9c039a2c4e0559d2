//! The curl examples the payments API was first described with, run exactly as written against a
//! fresh server in development mode. Two of them are wrong as written, and the server must say so
//! clearly: its "retry" drops `metadata` (a different request under the same key: 422), and its
//! concurrency example appends `--data-urlencode "concurrent_count=10"` to a JSON body, which curl
//! sends as `{…}&concurrent_count=10` (one 400 that says `concurrent_count` is a query parameter,
//! and nothing consumed).

use std::process::Command;

use crate::support::{Options, Server};

/// The examples, verbatim, each with the status it must get.
const EXAMPLES: &[(&str, u16)] = &[
    (
        r#"curl -X POST http://localhost:8000/api/v1/payments \
  -H "Content-Type: application/json" \
  -H "Authorization: Bearer test-api-key" \
  -H "Idempotency-Key: $IDEMPOTENCY_KEY" \
  -d '{
    "amount": 99.99,
    "currency": "USD",
    "description": "Premium subscription",
    "payment_method": "credit_card",
    "metadata": {
      "customer_id": "cust_123",
      "order_id": "ord_456"
    }
  }'"#,
        201,
    ),
    (
        r#"curl -X POST http://localhost:8000/api/v1/payments \
  -H "Content-Type: application/json" \
  -H "Authorization: Bearer test-api-key" \
  -H "Idempotency-Key: $IDEMPOTENCY_KEY" \
  -d '{
    "amount": 99.99,
    "currency": "USD",
    "description": "Premium subscription",
    "payment_method": "credit_card"
  }'"#,
        422,
    ),
    (
        r#"curl -X GET http://localhost:8000/api/v1/rate-limits \
  -H "Authorization: Bearer test-api-key""#,
        200,
    ),
    ("curl -X GET http://localhost:8000/api/v1/retry-config", 200),
    (
        r#"curl -X POST http://localhost:8000/api/v1/simulate-concurrent \
  -H "Content-Type: application/json" \
  -H "Authorization: Bearer test-api-key" \
  -H "Idempotency-Key: test-concurrent-key" \
  -d '{
    "amount": 50.00,
    "currency": "USD",
    "payment_method": "credit_card"
  }' \
  --data-urlencode "concurrent_count=10""#,
        400,
    ),
    ("curl http://localhost:8000/health", 200),
];

/// The specification sets the key first.
const KEY_SETUP: &str = "IDEMPOTENCY_KEY=$(uuidgen)";

/// Runs `script` with curl printing the status after the body; uuidgen from the kernel where
/// util-linux's is not installed.
fn run(port: u16, script: &str) -> String {
    let prelude = "set -euo pipefail\n\
        command -v uuidgen >/dev/null || uuidgen() { cat /proc/sys/kernel/random/uuid; }\n\
        curl() { command curl -sS -w '\\nstatus=%{http_code}\\n' \"$@\"; }\n";
    let script = script.replace("localhost:8000", &format!("127.0.0.1:{port}"));
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script}\n{stdout}\n{stderr}");
    stdout
}

#[test]
fn the_specifications_examples_as_written() {
    let server = Server::start(&Options {
        development: true,
        ..Options::default()
    });
    // One shell for the key and the two payments that share it.
    let payments = format!("{KEY_SETUP}\n{}\n{}", EXAMPLES[0].0, EXAMPLES[1].0);
    let answers = run(server.port, &payments);
    let statuses: Vec<_> = answers
        .lines()
        .filter(|l| l.starts_with("status="))
        .collect();
    assert_eq!(statuses, ["status=201", "status=422"], "{answers}");
    assert!(answers.contains("\"status\":\"succeeded\""), "{answers}");
    assert!(answers.contains("different request"), "{answers}");

    for (example, status) in &EXAMPLES[2..] {
        let answer = run(server.port, example);
        assert!(
            answer.ends_with(&format!("status={status}\n")),
            "{example}\n{answer}"
        );
    }
    let simulated = run(server.port, EXAMPLES[4].0);
    assert!(
        simulated.contains("`concurrent_count` is a query parameter"),
        "{simulated}"
    );
    // Nothing was fanned out: the one payment above is the only one the payments policy saw.
    let limits = run(server.port, EXAMPLES[2].0);
    assert!(limits.contains("\"name\":\"payments\""), "{limits}");
    assert!(limits.contains("\"remaining\":8"), "{limits}");

    // The specification pipes the health check into jq.
    let services = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -euo pipefail\ncurl http://127.0.0.1:{}/health | jq '.services'",
            server.port
        ))
        .output()
        .expect("bash runs");
    let services = String::from_utf8_lossy(&services.stdout);
    assert!(
        services.contains("\"redis\"") && services.contains("\"database\""),
        "{services}"
    );
}
