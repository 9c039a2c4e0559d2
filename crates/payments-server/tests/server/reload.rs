//! SIGHUP under load: `tollgate-load` at concurrency 16 for 20 s while the configuration is
//! reloaded every second, alternating two limits, with one broken file among them.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{ALICE, Isolated, Server, sample};

/// A sibling binary of the workspace (`tollgate-load`), built by `cargo test --workspace`.
pub(crate) fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let path = (exe.parent().and_then(|deps| deps.parent()))
        .map(|profile| profile.join(name))
        .expect("a target directory");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p {name}` (or `cargo test --workspace`, which builds it)",
        path.display()
    );
    path
}

/// The default policies with the payments limit at `limit` a minute.
fn config(limit: u64) -> String {
    format!(
        "[[policy]]\nname = \"per-user\"\nscope = \"user\"\nalgorithm = \"sliding-window\"\n\
         limit = 1000000\nwindow = \"60s\"\n\
         [[policy]]\nname = \"payments\"\nscope = \"user\"\nalgorithm = \"sliding-window\"\n\
         limit = {limit}\nwindow = \"60s\"\nendpoint = \"POST /api/v1/payments\"\n"
    )
}

/// The payments limit `server` reports to alice now.
fn payments_limit(server: &Server) -> u64 {
    let report = server.get("/api/v1/rate-limits", Some(ALICE)).json();
    let policies = report["policies"].as_array().cloned().unwrap_or_default();
    let payments = policies.iter().find(|p| p["name"] == "payments");
    payments
        .and_then(|p| p["limit"].as_u64())
        .expect("the payments policy")
}

/// Waits until `server` has counted `count` reloads with `result`.
fn until_reloaded(server: &Server, result: &str, count: u64) -> Duration {
    let series = format!("config_reloads_total{{result=\"{result}\"}}");
    let started = Instant::now();
    while sample(&server.get("/metrics", None).body, &series) != Some(count) {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{series} never reached {count}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    started.elapsed()
}

#[test]
fn reloading_every_second_under_load_loses_no_request() {
    let Some(services) = Isolated::new("reloading_every_second_under_load") else {
        return;
    };
    let load = sibling("tollgate-load");
    let keys = Command::new(&load)
        .args(["--print-api-keys", "--users", "16"])
        .output();
    let keys = String::from_utf8(keys.expect("tollgate-load runs").stdout).expect("text");
    let keys = format!("{},{ALICE}:alice", keys.trim());
    let (low, high) = (100_000, 200_000);
    let server = Server::start(&services.options().env("API_KEYS", &keys).toml(&config(low)));
    let url = format!("http://127.0.0.1:{}", server.port);
    let args = [
        "--url",
        &url,
        "--users",
        "16",
        "--concurrency",
        "16",
        "--duration",
        "20s",
    ];
    let running = Command::new(&load)
        .args(args)
        .arg("--quiet")
        .stdout(Stdio::piped())
        .spawn()
        .expect("tollgate-load starts");

    let started = Instant::now();
    let (mut successes, mut failures, mut in_force) = (0, 0, low);
    for second in 1..20_u64 {
        std::thread::sleep(
            (started + Duration::from_secs(second)).saturating_duration_since(Instant::now()),
        );
        if second == 10 {
            // A limit of zero does not validate: nothing changes.
            server.rewrite_config(&config(0));
            server.signal("HUP");
            failures += 1;
            until_reloaded(&server, "failure", failures);
        } else {
            in_force = if in_force == low { high } else { low };
            server.rewrite_config(&config(in_force));
            server.signal("HUP");
            successes += 1;
            until_reloaded(&server, "success", successes);
        }
        // The first request after the reload is decided by what is now in force.
        assert_eq!(payments_limit(&server), in_force, "after reload {second}");
    }

    let output = running.wait_with_output().expect("tollgate-load ends");
    let report = String::from_utf8_lossy(&output.stdout);
    eprintln!("{report}");
    assert!(report.contains(" 0 transport errors)"), "{report}");
    let statuses = report
        .lines()
        .find(|l| l.trim_start().starts_with("statuses:"));
    let statuses = statuses.expect("the statuses line");
    assert!(!statuses.contains("\"5"), "a 5xx under reloads: {statuses}");
    assert!(statuses.contains("\"201\""), "{statuses}");
}
