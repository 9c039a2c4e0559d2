//! The command line as scripts use it: `--print-api-keys` prints the keys a server needs for
//! `--users`, and a run against nothing reports its transport errors and exits non-zero. (Also makes
//! `cargo test --workspace` build the binary, which the server's reload-under-load test drives.)

use std::process::Command;

#[test]
fn api_keys_are_printed_for_a_hand_started_server() {
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate-load"))
        .args(["--print-api-keys", "--users", "2"])
        .output()
        .expect("runs");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "tollgate-load-key-0:load-user-0,tollgate-load-key-1:load-user-1"
    );
}

#[test]
fn a_run_against_no_server_reports_transport_errors_and_fails() {
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate-load"))
        .args([
            "--url",
            "http://127.0.0.1:9",
            "--duration",
            "300ms",
            "--quiet",
        ])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains(" transport errors)"), "{stdout}");
    assert!(
        !stdout.contains("(0 requests, 0 transport errors)"),
        "{stdout}"
    );
}
