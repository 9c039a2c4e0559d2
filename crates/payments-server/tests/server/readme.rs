//! The README's curl examples, run as written against a fresh server in development mode.

use std::process::Command;

use crate::support::{Options, Server};

const START: &str = "<!-- curl-examples:start -->";
const END: &str = "<!-- curl-examples:end -->";

/// The shell code of every ```bash block between the markers.
fn examples(readme: &str) -> String {
    let start = readme.find(START).expect("the start marker") + START.len();
    let end = readme.find(END).expect("the end marker");
    let mut script = String::new();
    let mut in_block = false;
    for line in readme[start..end].lines() {
        match line.trim() {
            "```bash" => in_block = true,
            "```" => in_block = false,
            _ if in_block => {
                script.push_str(line);
                script.push('\n');
            }
            _ => {}
        }
    }
    script
}

#[test]
fn readme_curl_examples_work_as_written() {
    let readme = include_str!("../../../../README.md");
    let script = examples(readme);
    assert!(script.matches("curl").count() >= 8, "{script}");
    let server = Server::start(&Options {
        development: true,
        ..Options::default()
    });
    let script = script.replace("localhost:8000", &format!("127.0.0.1:{}", server.port));
    // Any non-2xx answer or failing command fails the test.
    let prelude = "set -euo pipefail\ncurl() { command curl --fail-with-body -sS \"$@\"; }\n";
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for expected in [
        "http/1.1 201 created",
        "idempotent-replayed: false",
        "idempotent-replayed: true",
        "\"policies\"",
        "\"max_attempts\"",
        "\"executed\":1",
        "\"status\":\"ok\"",
        "payment_requests_total",
    ] {
        assert!(stdout.contains(expected), "{expected} in\n{stdout}");
    }
}
