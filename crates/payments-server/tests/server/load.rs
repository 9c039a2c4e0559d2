//! Driving a test server with `tollgate-load`, the workspace's own load generator, built
//! beside this test by `cargo test --workspace`.

use std::process::{Child, Command, Stdio};

use crate::support::workspace_binary;

/// The `API_KEYS` value that gives `tollgate-load --users users` its keys.
pub(crate) fn api_keys(users: usize) -> String {
    let output = Command::new(workspace_binary("tollgate-load"))
        .args(["--print-api-keys", "--users", &users.to_string()])
        .output()
        .expect("tollgate-load runs");
    String::from_utf8(output.stdout)
        .expect("text")
        .trim()
        .to_owned()
}

/// `tollgate-load` against the server on `port` with `users` users, 16 requests in flight, for
/// `duration`, started now.
pub(crate) fn start(port: u16, users: usize, duration: &str) -> Child {
    let url = format!("http://127.0.0.1:{port}");
    let users = users.to_string();
    Command::new(workspace_binary("tollgate-load"))
        .args([
            "--url",
            &url,
            "--users",
            &users,
            "--concurrency",
            "16",
            "--duration",
            duration,
        ])
        .arg("--quiet")
        .stdout(Stdio::piped())
        .spawn()
        .expect("tollgate-load starts")
}

/// Waits for `run` and checks its report: no transport error, no 5xx, payments made, and its
/// audit clean. The report.
pub(crate) fn finish_clean(run: Child) -> String {
    let output = run.wait_with_output().expect("tollgate-load ends");
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!("{report}");
    assert!(report.contains(" 0 transport errors)"), "{report}");
    let statuses = report
        .lines()
        .find(|l| l.trim_start().starts_with("statuses:"));
    let statuses = statuses.expect("the statuses line");
    assert!(!statuses.contains("\"5"), "a 5xx: {statuses}");
    assert!(statuses.contains("\"201\""), "{statuses}");
    assert!(
        report.contains("every reply agrees, one payment per key"),
        "{report}"
    );
    report
}
