//! Redis or PostgreSQL going away mid-run: reported by `/health` and `/ready`, counted in the
//! metrics, and never a lost or doubled payment.

use std::time::{Duration, Instant};

use crate::support::{payment, unique, Isolated, Options, Proxy, Server, ALICE};

/// `scheme://user@host:port/db` with `host:port` replaced by `address`.
fn via(url: &str, address: &str, default_port: u16) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (userinfo, rest) = rest.rsplit_once('@').map_or(("", rest), |(u, r)| (u, r));
    let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    let target = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    };
    let at = if userinfo.is_empty() { "" } else { "@" };
    (target, format!("{scheme}://{userinfo}{at}{address}/{path}"))
}

#[test]
fn outages_are_reported_and_never_lose_or_double_a_payment() {
    let Some(services) = Isolated::new("outages_are_reported_and_never_lose_or_double_a_payment")
    else {
        return;
    };
    let (redis_target, _) = via(&services.redis_url, "", 6379);
    let (pg_target, _) = via(&services.database_url, "", 5432);
    let redis = Proxy::to(&redis_target);
    let database = Proxy::to(&pg_target);
    let (_, redis_url) = via(
        &services.redis_url,
        &format!("127.0.0.1:{}", redis.port),
        6379,
    );
    let (_, database_url) = via(
        &services.database_url,
        &format!("127.0.0.1:{}", database.port),
        5432,
    );
    let options = Options {
        env: services
            .options()
            .env
            .into_iter()
            .filter(|(name, _)| name != "REDIS_URL" && name != "DATABASE_URL")
            .collect(),
        ..Options::default()
    }
    .env("REDIS_URL", &redis_url)
    .env("DATABASE_URL", &database_url)
    // A claim whose release was lost in the outage blocks its key for one lease at most.
    // Every /health probes afresh: the test watches the state change.
    .toml("[processor]\ntimeout = \"2s\"\n[idempotency]\nlease = \"3s\"\n[health]\ncache = \"0s\"");
    let server = Server::start(&options);
    server.get("/ready", None).expect(200);

    // Redis away: limits fall back to this process, payments go on, health says so.
    redis.cut();
    let paid = server.pay(ALICE, &unique("order"), &payment("1.00", "card"));
    paid.expect(201);
    let health = server.get("/health", None).json();
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["services"]["redis"]["status"], "down", "{health}");
    assert_eq!(health["services"]["database"]["status"], "up", "{health}");
    server.get("/ready", None).expect(503);
    let metrics = server.get("/metrics", None).body;
    let fallback = metrics
        .lines()
        .find(|l| l.starts_with("rate_limiter_degraded_decisions_total{mode=\"local_fallback\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("the fallback counter");
    assert!(fallback >= 1, "{metrics}");
    redis.restore();

    // PostgreSQL away: payments are refused with 503 + Retry-After, nothing is recorded.
    database.cut();
    let key = unique("order");
    let body = payment("2.00", "card");
    let refused = server.pay(ALICE, &key, &body);
    refused.expect(503);
    assert!(refused.header("retry-after").is_some(), "{refused:?}");
    // The database's own error stays in the server's log.
    let detail = refused.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        detail.contains("retry with the same Idempotency-Key"),
        "{detail}"
    );
    assert!(
        !detail.contains("db error") && !detail.contains("127.0.0.1"),
        "{detail}"
    );
    let health = server.get("/health", None).json();
    assert_eq!(health["services"]["database"]["status"], "down", "{health}");
    server.get("/ready", None).expect(503);

    // Back: the same key is retried until the pool has fresh connections, and pays once.
    database.restore();
    let deadline = Instant::now() + Duration::from_secs(15);
    let paid = loop {
        let response = server.pay(ALICE, &key, &body);
        if response.status == 201 || Instant::now() > deadline {
            break response;
        }
        assert!(
            [503, 409].contains(&response.status),
            "only retryable answers while recovering: {response:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    paid.expect(201);
    assert_eq!(
        services.count(&format!(
            "SELECT count(*) FROM {{schema}}.payments WHERE idempotency_key = '{key}'"
        )),
        1
    );
    server.get("/ready", None).expect(200);
}
