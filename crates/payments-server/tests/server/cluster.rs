//! The server on a Redis Cluster (`REDIS_CLUSTER_URLS`): limits shared by two processes,
//! keys spread over several primaries, idempotency records in the cluster across processes,
//! and a primary killed mid-run (its replica takes over; no request fails meanwhile).
//!
//! They run when `TEST_REDIS_CLUSTER_URLS` names a cluster's nodes (`.ci/redis-cluster`
//! starts one); the failover test starts a cluster of its own with the same script, since it
//! kills one of its nodes.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{ALICE, BOB, CAROL, Options, Server, payment, runtime, services, unique};

/// `TEST_REDIS_CLUSTER_URLS`, or `None` after saying the test is skipped.
fn cluster_urls(test: &str) -> Option<String> {
    match std::env::var("TEST_REDIS_CLUSTER_URLS") {
        Ok(urls) if !urls.is_empty() => Some(urls),
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: needs a Redis Cluster; set TEST_REDIS_CLUSTER_URLS=redis://127.0.0.1:7000,... (.ci/redis-cluster starts one) to run it"
            );
            None
        }
    }
}

/// A plain connection to one node.
async fn node(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("a node url")
        .get_multiplexed_async_connection()
        .await
        .expect("the node answers")
}

/// `INFO replication` of `url` as `field:value` lines.
async fn replication(url: &str) -> String {
    redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut node(url).await)
        .await
        .expect("info")
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Keys under `prefix` held by each primary among `urls` (`(url, count)`).
async fn keys_per_primary(urls: &[&str], prefix: &str) -> Vec<(String, usize)> {
    let mut counts = Vec::new();
    for url in urls {
        if field(&replication(url).await, "role") != Some("master") {
            continue;
        }
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut node(url).await)
            .await
            .expect("keys");
        counts.push(((*url).to_owned(), keys.len()));
    }
    counts
}

/// The node among `urls` that replicates `primary`.
async fn replica_of(urls: &[&str], primary: &str) -> String {
    let port = primary.rsplit(':').next();
    for url in urls {
        let info = replication(url).await;
        if field(&info, "role") == Some("slave") && field(&info, "master_port") == port {
            return (*url).to_owned();
        }
    }
    panic!("{primary} has no replica");
}

/// Deletes the keys under `prefix` on every primary.
async fn delete_keys(urls: &[&str], prefix: &str) {
    for url in urls {
        if field(&replication(url).await, "role") == Some("master") {
            crate::services::delete_keys(url, prefix).await;
        }
    }
}

#[test]
fn two_processes_share_limits_and_records_on_a_cluster() {
    let Some(urls) = cluster_urls("cluster::two_processes_share_limits_and_records_on_a_cluster")
    else {
        return;
    };
    let prefix = unique("tg_cluster");
    // No database: the idempotency records live in the cluster too.
    let options = Options::default()
        .env("REDIS_CLUSTER_URLS", &urls)
        .env("REDIS_KEY_PREFIX", &prefix);
    let servers = [Server::start(&options), Server::start(&options)];

    // One key, paid on one process, replayed by the other; another body is refused there.
    let key = unique("order");
    let body = payment("12.00", "card");
    let first = servers[0].pay(ALICE, &key, &body);
    first.expect(201);
    let replay = servers[1].pay(ALICE, &key, &body);
    replay.expect(201);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.json(), first.json());
    servers[1]
        .pay(ALICE, &key, &payment("13.00", "card"))
        .expect(422);

    // Bob's payments limit (10 a minute) is one limit across both processes.
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..24)
            .map(|i| {
                let server = &servers[i % 2];
                scope.spawn(move || {
                    server
                        .pay(BOB, &unique("order"), &payment("1.00", "card"))
                        .status
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("an answer"))
            .collect()
    });
    let paid = statuses.iter().filter(|s| **s == 201).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((paid, limited), (10, 14), "{statuses:?}");

    let health = servers[0].get("/health", None).json();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["services"]["redis"]["status"], "up", "{health}");

    // The limits' and the records' keys are spread over the primaries.
    let nodes: Vec<&str> = urls.split(',').collect();
    runtime().block_on(async {
        let counts = keys_per_primary(&nodes, &prefix).await;
        let holding = counts.iter().filter(|(_, n)| *n > 0).count();
        assert!(holding >= 2, "keys per primary: {counts:?}");
        delete_keys(&nodes, &prefix).await;
    });
}

/// A cluster of this test's own, on ports 7100–7105, failing a silent primary over after 1 s;
/// shut down when dropped.
struct OwnCluster {
    urls: Vec<String>,
    dir: std::path::PathBuf,
}

impl OwnCluster {
    fn start() -> OwnCluster {
        let dir = std::env::temp_dir().join(unique("tollgate-cluster"));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.ci/redis-cluster");
        let output = Command::new("bash")
            .arg(script)
            .env("TOLLGATE_CLUSTER_PORT", "7100")
            .env("TOLLGATE_CLUSTER_DIR", &dir)
            .env("TOLLGATE_CLUSTER_NODE_TIMEOUT", "1000")
            .output()
            .expect("bash runs .ci/redis-cluster");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        OwnCluster {
            urls: (7100..7106)
                .map(|port| format!("redis://127.0.0.1:{port}"))
                .collect(),
            dir,
        }
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for port in 7100..7106 {
            let _ = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "shutdown", "nosave"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Payments from three users on a server whose limits live on the cluster (local fallback,
/// the default); meanwhile the primary holding most of its keys is killed. Every request is
/// answered 201 or 429, `/ready` stays 200, the replica takes over, and the limiter decides on
/// Redis again by itself. A second server keeps its idempotency records in the cluster: the
/// records written before the kill (and replicated) replay after the failover.
#[test]
fn a_primary_killed_mid_run_fails_over_without_failing_requests() {
    let test = "cluster::a_primary_killed_mid_run_fails_over_without_failing_requests";
    let (Some(_), Some((_, database_url))) = (cluster_urls(test), services(test)) else {
        return;
    };
    let cluster = OwnCluster::start();
    let urls = cluster.urls.join(",");
    let nodes: Vec<&str> = cluster.urls.iter().map(String::as_str).collect();
    let schema = unique("tg_failover");
    let limits = Server::start(
        &Options::default()
            .env("REDIS_CLUSTER_URLS", &urls)
            .env("REDIS_KEY_PREFIX", &schema)
            .env("DATABASE_URL", &database_url)
            .env("DATABASE_SCHEMA", &schema)
            .toml("[health]\ncache = \"0s\""),
    );
    let records_prefix = unique("tg_records");
    let records = Server::start(
        &Options::default()
            .env("REDIS_CLUSTER_URLS", &urls)
            .env("REDIS_KEY_PREFIX", &records_prefix),
    );
    let paid_before: Vec<(String, String, serde_json::Value)> = (0..12)
        .map(|i| {
            let (key, body) = (unique("order"), payment(&format!("{}.00", i + 1), "card"));
            let user = [ALICE, BOB, CAROL][i % 3];
            let response = records.pay(user, &key, &body);
            response.expect(201);
            (key, body, response.json())
        })
        .collect();
    for (user, _) in [ALICE, BOB, CAROL].iter().zip(0..) {
        limits
            .pay(user, &unique("order"), &payment("1.00", "card"))
            .expect(201);
    }

    let (victim, replica) = runtime().block_on(replicated_primary(&nodes, &schema));
    kill(&victim);

    let answered = pay_for_six_seconds(&limits);

    // The replica took over, and the limiter is back on Redis by itself.
    let role = runtime().block_on(async { replication(&replica).await });
    assert_eq!(field(&role, "role"), Some("master"), "{replica}: {role}");
    let health = limits.until_healthy(ALICE);
    assert_eq!(health["status"], "ok", "{health}");
    let metrics = limits.get("/metrics", None).body;
    let degraded = crate::support::sample(&metrics, crate::support::LOCAL_FALLBACK)
        .expect("the fallback counter");
    // The kill mattered: decisions on the dead primary's slots fell back until the failover.
    assert!(degraded >= 1, "{metrics}");
    println!("failover: {answered} payments answered in 6 s, {degraded} decided locally");

    // Every record written (and replicated) before the kill replays after the failover (a
    // replay is a request too: 4 + 4 of each user's 10 a minute).
    for (i, (key, body, first)) in paid_before.iter().enumerate() {
        let user = [ALICE, BOB, CAROL][i % 3];
        let replay = records.pay(user, key, body);
        replay.expect(201);
        assert_eq!(
            replay.header("idempotent-replayed"),
            Some("true"),
            "{replay:?}"
        );
        assert_eq!(&replay.json(), first);
    }
    runtime().block_on(crate::services::drop_schema(&database_url, &schema));
}

/// The primary among `nodes` holding most keys under `prefix`, and its replica, once the
/// replica has everything the primary acknowledged (the test waits for it; production cannot).
async fn replicated_primary(nodes: &[&str], prefix: &str) -> (String, String) {
    let counts = keys_per_primary(nodes, prefix).await;
    let (victim, _) = counts
        .iter()
        .max_by_key(|(_, n)| *n)
        .expect("primaries")
        .clone();
    let replica = replica_of(nodes, &victim).await;
    let offset = |info: &str, name: &str| -> u64 {
        field(info, name).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    let wanted = offset(&replication(&victim).await, "master_repl_offset");
    let deadline = Instant::now() + Duration::from_secs(5);
    while offset(&replication(&replica).await, "slave_repl_offset") < wanted
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (victim, replica)
}

/// SIGKILL to the node at `url`, which says which process it is (a cluster left running by an
/// earlier run has its pid files elsewhere).
fn kill(url: &str) {
    let pid = runtime().block_on(async {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut node(url).await)
            .await
            .expect("info");
        field(&info, "process_id").expect("a process id").to_owned()
    });
    let killed = Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
}

/// Six seconds of payments from three users: each answered 201 or 429 (never refused for
/// Redis), `/ready` 200 between rounds; how many were answered.
fn pay_for_six_seconds(server: &Server) -> usize {
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_secs(6) {
        for user in [ALICE, BOB, CAROL] {
            let response = server.pay(user, &unique("order"), &payment("1.00", "card"));
            assert!(
                [201, 429].contains(&response.status),
                "after {:?}: {response:?}",
                started.elapsed()
            );
            answered += 1;
        }
        server.get("/ready", None).expect(200);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(answered > 30);
    answered
}

/// A cluster that cannot be used is one start-up line naming the setting.
#[test]
fn a_bad_cluster_setting_is_a_start_up_error_naming_it() {
    let start = |urls: &str| {
        crate::tls::start_up_error(&Options::default().env("REDIS_CLUSTER_URLS", urls))
    };
    let port = crate::support::free_port();
    let stderr = start(&format!("redis://127.0.0.1:{port}"));
    assert!(stderr.contains("REDIS_CLUSTER_URLS"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let stderr = start("127.0.0.1:7000");
    assert!(
        stderr.contains("REDIS_CLUSTER_URLS") && stderr.contains("not a redis://"),
        "{stderr}"
    );
    let stderr = start(" , ");
    assert!(
        stderr.contains("REDIS_CLUSTER_URLS: no seed node"),
        "{stderr}"
    );
    let both = Options::default()
        .env("REDIS_URL", "redis://127.0.0.1:6379")
        .env("REDIS_CLUSTER_URLS", "redis://127.0.0.1:7000");
    let stderr = crate::tls::start_up_error(&both);
    assert!(
        stderr.contains("REDIS_URL and REDIS_CLUSTER_URLS are both set"),
        "{stderr}"
    );
    // A standalone Redis is not a cluster.
    if let Ok(standalone) = std::env::var("TEST_REDIS_URL") {
        let stderr = start(&standalone);
        assert!(stderr.contains("REDIS_CLUSTER_URLS"), "{stderr}");
    }
}

/// A cluster that speaks TLS only (`rediss://`, the nodes announcing the name their
/// certificate is for), trusted through `REDIS_CA_FILE`: limits and records work; another CA
/// is a start-up error naming the setting.
#[test]
fn a_tls_cluster_with_a_private_ca_serves_payments() {
    let test = "cluster::a_tls_cluster_with_a_private_ca_serves_payments";
    let (Ok(urls), Ok(dir)) = (
        std::env::var("TEST_REDIS_CLUSTER_TLS_URLS"),
        std::env::var("TEST_TLS_DIR"),
    ) else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: needs a TLS Redis Cluster; eval \"$(.ci/tls-services)\", then eval \"$(TOLLGATE_CLUSTER_PORT=7200 TOLLGATE_CLUSTER_TLS_DIR=$TEST_TLS_DIR .ci/redis-cluster)\" to run it"
        );
        return;
    };
    let prefix = unique("tg_cluster_tls");
    let options = |ca: &str| {
        Options::default()
            .env("REDIS_CLUSTER_URLS", &urls)
            .env("REDIS_CA_FILE", &format!("{dir}/{ca}"))
            .env("REDIS_KEY_PREFIX", &prefix)
    };
    let stderr = crate::tls::start_up_error(&options("wrong-ca.crt"));
    assert!(
        stderr.contains("REDIS_CLUSTER_URLS") && stderr.contains("UnknownIssuer"),
        "{stderr}"
    );
    // The certificate names `localhost`, not the address.
    let by_address = urls.replace("localhost", "127.0.0.1");
    let stderr =
        crate::tls::start_up_error(&options("ca.crt").env("REDIS_CLUSTER_URLS", &by_address));
    assert!(
        stderr.contains("REDIS_CLUSTER_URLS") && stderr.contains("not valid for name"),
        "{stderr}"
    );
    let server = Server::start(&options("ca.crt"));
    let key = unique("order");
    let paid = server.pay(ALICE, &key, &payment("8.00", "card"));
    paid.expect(201);
    assert!(paid.header("x-ratelimit-remaining").is_some(), "{paid:?}");
    let replay = server.pay(ALICE, &key, &payment("8.00", "card"));
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    server
        .pay(ALICE, &key, &payment("9.00", "card"))
        .expect(422);
    let health = server.get("/health", None).json();
    assert_eq!(health["status"], "ok", "{health}");
}
