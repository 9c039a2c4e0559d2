//! SIGHUP under load: `tollgate-load` at concurrency 16 for 20 s while the configuration is
//! reloaded every second, alternating two limits, with one broken file among them.

use std::time::{Duration, Instant};

use crate::load;
use crate::support::{ALICE, Isolated, Server, sample};

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
    let keys = format!("{},{ALICE}:alice", load::api_keys(16));
    let (low, high) = (100_000, 200_000);
    let server = Server::start(&services.options().env("API_KEYS", &keys).toml(&config(low)));
    let running = load::start(server.port, 16, "20s");

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

    load::finish_clean(running);
}
