//! Redis or PostgreSQL going away mid-run: reported by `/health` and `/ready` (not ready only
//! without what this process cannot serve without), counted in the metrics, and never a lost
//! or doubled payment.

use std::time::{Duration, Instant};

use crate::support::{ALICE, BOB, CAROL, Isolated, Options, Proxy, Server, payment, unique};

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

/// The test's services behind TCP proxies the test can cut, and the server options that use
/// them (`with_database`: PostgreSQL too, or Redis alone).
pub(crate) struct Proxied {
    pub(crate) redis: Proxy,
    pub(crate) database: Option<Proxy>,
    pub(crate) options: Options,
}

pub(crate) fn proxied(services: &Isolated, with_database: bool) -> Proxied {
    let (redis_target, _) = via(&services.redis_url, "", 6379);
    let redis = Proxy::to(&redis_target);
    let (_, redis_url) = via(
        &services.redis_url,
        &format!("127.0.0.1:{}", redis.port),
        6379,
    );
    let mut options = Options {
        env: services
            .options()
            .env
            .into_iter()
            .filter(|(name, _)| name != "REDIS_URL" && name != "DATABASE_URL")
            .collect(),
        ..Options::default()
    }
    .env("REDIS_URL", &redis_url);
    let database = with_database.then(|| {
        let (pg_target, _) = via(&services.database_url, "", 5432);
        let database = Proxy::to(&pg_target);
        let (_, database_url) = via(
            &services.database_url,
            &format!("127.0.0.1:{}", database.port),
            5432,
        );
        options = std::mem::take(&mut options).env("DATABASE_URL", &database_url);
        database
    });
    Proxied {
        redis,
        database,
        options,
    }
}

#[test]
fn outages_are_reported_and_never_lose_or_double_a_payment() {
    let Some(services) = Isolated::new("outages_are_reported_and_never_lose_or_double_a_payment")
    else {
        return;
    };
    let Proxied {
        redis,
        database,
        options,
    } = proxied(&services, true);
    let database = database.expect("proxied");
    // A claim whose release was lost in the outage blocks its key for one lease at most.
    // Every /health probes afresh: the test watches the state change.
    let options = options.toml(
        "[processor]\ntimeout = \"2s\"\n[idempotency]\nlease = \"3s\"\n[health]\ncache = \"0s\"\n\
         [timeouts]\npre_drain = \"1s\"",
    );
    let mut server = Server::start(&options);
    server.get("/ready", None).expect(200);
    redis_away(&server, &redis);
    database_away(&server, &database, &services);
    sigterm_keeps_what_it_acknowledged(&mut server, &services);
}

/// Redis away: limits fall back to this process, every payment goes on, health says so, and
/// the process stays ready (a Redis blip must not take every replica out at once).
fn redis_away(server: &Server, redis: &Proxy) {
    redis.cut();
    for user in [ALICE, BOB, CAROL].repeat(5) {
        let paid = server.pay(user, &unique("order"), &payment("1.00", "card"));
        paid.expect(201);
    }
    let health = server.get("/health", None).json();
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["ready"], true, "{health}");
    assert_eq!(health["services"]["redis"]["status"], "down", "{health}");
    assert_eq!(health["services"]["redis"]["required"], false, "{health}");
    assert_eq!(
        health["services"]["redis"]["error"], "unavailable",
        "{health}"
    );
    assert_eq!(health["services"]["database"]["status"], "up", "{health}");
    server.get("/ready", None).expect(200);
    let metrics = server.get("/metrics", None).body;
    assert!(
        metrics.contains("backend_up{backend=\"redis\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("backend_up{backend=\"database\"} 1"),
        "{metrics}"
    );
    let fallback = crate::support::sample(&metrics, crate::support::LOCAL_FALLBACK)
        .expect("the fallback counter");
    assert!(fallback >= 1, "{metrics}");
    redis.restore();
}

/// PostgreSQL away: payments are refused with 503 + Retry-After, nothing is recorded; back,
/// the same key pays once.
fn database_away(server: &Server, database: &Proxy, services: &Isolated) {
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
    assert_eq!(health["ready"], false, "{health}");
    let text = health.to_string();
    assert!(
        !text.contains("127.0.0.1") && !text.contains("db error"),
        "{health}"
    );
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

/// SIGTERM: not ready at once, payments still taken during the pre-drain, then a clean exit
/// with every acknowledged payment stored.
fn sigterm_keeps_what_it_acknowledged(server: &mut Server, services: &Isolated) {
    server.signal("TERM");
    let signalled = Instant::now();
    while server.get("/ready", None).status != 503 {
        assert!(
            signalled.elapsed() < Duration::from_millis(800),
            "not ready"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let keys: Vec<String> = (0..3).map(|_| unique("order")).collect();
    for (user, key) in [BOB, CAROL, BOB].into_iter().zip(&keys) {
        server.pay(user, key, &payment("4.00", "card")).expect(201);
    }
    let status = server.exit_status();
    assert!(status.success(), "{status}");
    for key in &keys {
        let sql = format!(
            "SELECT count(*) FROM {{schema}}.payments WHERE idempotency_key = '{key}' \
             AND status = 'succeeded'"
        );
        assert_eq!(services.count(&sql), 1, "{key}");
    }
}

#[test]
fn without_a_database_redis_holds_the_keys_and_readiness_needs_it() {
    let Some(services) =
        Isolated::new("without_a_database_redis_holds_the_keys_and_readiness_needs_it")
    else {
        return;
    };
    let Proxied { redis, options, .. } = proxied(&services, false);
    let options = options.toml("[health]\ncache = \"0s\"");
    let server = Server::start(&options);
    server.get("/ready", None).expect(200);
    redis.cut();
    let ready = server.get("/ready", None);
    ready.expect(503);
    assert_eq!(
        ready.json()["services"]["redis"]["required"],
        true,
        "{ready:?}"
    );
    redis.restore();
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.get("/ready", None).status != 200 {
        assert!(Instant::now() < deadline, "ready again once Redis is back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `redis.connection = "pool"` (the default is one multiplexed connection, which the other
/// outage tests use): cut, the limits fall back to the process and every payment is served,
/// `/ready` stays 200; restored, the pool's fresh connections reach Redis again by themselves
/// and the limits are shared again.
#[test]
fn a_pooled_redis_connection_rides_out_an_outage() {
    let Some(services) = Isolated::new("a_pooled_redis_connection_rides_out_an_outage") else {
        return;
    };
    let Proxied { redis, options, .. } = proxied(&services, true);
    let server =
        Server::start(&options.toml("[redis]\nconnection = \"pool\"\n[health]\ncache = \"0s\""));
    server
        .pay(ALICE, &unique("order"), &payment("1.00", "card"))
        .expect(201);
    let health = server.get("/health", None).json();
    assert_eq!(health["status"], "ok", "{health}");

    redis.cut();
    for user in [ALICE, BOB, CAROL] {
        server
            .pay(user, &unique("order"), &payment("1.00", "card"))
            .expect(201);
    }
    server.get("/ready", None).expect(200);
    let health = server.get("/health", None).json();
    assert_eq!(health["status"], "degraded", "{health}");

    redis.restore();
    let health = server.until_healthy(BOB);
    assert_eq!(health["status"], "ok", "{health}");
    // The limits are shared again: Alice's count in Redis includes the first payment.
    let paid = server.pay(ALICE, &unique("order"), &payment("1.00", "card"));
    paid.expect(201);
    assert_eq!(paid.header("x-ratelimit-remaining"), Some("8"), "{paid:?}");
}

/// PostgreSQL cut for 2.5 s while a payment is at the processor: its result cannot be written,
/// so the request is answered 503, and the owner's release of the key — which failed with the
/// database — is retried until it lands. A client retrying with the same key as the server's
/// retry policy says completes the payment within seconds of the database's return (not after
/// the 60 s lease), charged once.
#[test]
fn a_database_blip_mid_payment_frees_the_key_within_seconds_of_recovery() {
    let Some(services) =
        Isolated::new("a_database_blip_mid_payment_frees_the_key_within_seconds_of_recovery")
    else {
        return;
    };
    let processor = crate::processor::MockProcessor::start(
        crate::support::free_port(),
        &["--latency", "1200ms"],
    );
    let Proxied {
        database, options, ..
    } = proxied(&services, true);
    let database = database.expect("proxied");
    let server = Server::start(
        &options
            .env("PROCESSOR_URL", &processor.url())
            .toml("[idempotency]\nlease = \"60s\"\n"),
    );
    let (key, body) = (unique("order"), payment("7.00", "card"));
    let (port, k, b) = (server.port, key.clone(), body.clone());
    let first = std::thread::spawn(move || crate::support::try_pay(port, ALICE, &k, &b));
    let deadline = Instant::now() + Duration::from_secs(10);
    while processor.stats().1 == 0 {
        assert!(Instant::now() < deadline, "the processor was never called");
        std::thread::sleep(Duration::from_millis(10));
    }
    database.cut();
    let cut = Instant::now();
    let first = first.join().expect("the client").expect("an answer");
    first.expect(503);
    let wait: u64 = first
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=5).contains(&wait), "{first:?}");
    std::thread::sleep(Duration::from_millis(2_500).saturating_sub(cut.elapsed()));
    database.restore();
    let restored = Instant::now();
    // The client follows Retry-After, as the published retry policy says.
    let mut answers = Vec::new();
    let paid = loop {
        let response = server.pay(ALICE, &key, &body);
        answers.push(response.status);
        if response.status == 201 || restored.elapsed() > Duration::from_secs(15) {
            break response;
        }
        assert!(
            [409, 503].contains(&response.status),
            "only retryable answers: {response:?}"
        );
        let after = response
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        std::thread::sleep(Duration::from_secs(after));
    };
    let took = restored.elapsed();
    eprintln!(
        "outage: a 2.5 s database cut mid-payment: paid {took:?} after recovery, answers {answers:?}"
    );
    paid.expect(201);
    assert!(took < Duration::from_secs(5), "{took:?}: {answers:?}");
    assert_eq!(processor.stats().0, 1, "charged once");
    assert_eq!(
        services.count(&format!(
            "SELECT count(*) FROM {{schema}}.payments WHERE idempotency_key = '{key}' AND status = 'succeeded'"
        )),
        1
    );
}
