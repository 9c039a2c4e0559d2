//! Redis-specific behaviour: memory/Redis equivalence over random schedules (and remembered
//! denials in front of Redis against Redis alone), concurrent clients on two pools, key expiry,
//! script reloading, and what happens when Redis goes away.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use redis::AsyncCommands;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tollgate_ratelimit::clock::ManualClock;
use tollgate_ratelimit::denials::DenialCache;
use tollgate_ratelimit::redis::{FailureMode, RedisConnection, RedisLimiter};
use tollgate_ratelimit::{Algorithm, MemoryLimiter, Policy, PolicyKey, RateLimiter, Scope};

use crate::support::{self, START, redis as r};

pub(crate) fn key(name: &str, algorithm: Algorithm, subject: &str) -> PolicyKey {
    PolicyKey::new(
        Arc::new(Policy::new(name, Scope::User, algorithm).expect("valid")),
        subject,
    )
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

#[derive(Clone, Debug)]
pub(crate) enum Step {
    Advance(u64),
    Check(Vec<usize>, u64),
    Peek(Vec<usize>, u64),
    Refund(Vec<usize>, u64),
}

pub(crate) fn steps() -> impl Strategy<Value = Vec<Step>> {
    let subset = prop::sample::subsequence(vec![0usize, 1, 2, 3], 1..=4);
    let step = prop_oneof![
        3 => (0u64..700_000).prop_map(Step::Advance),
        6 => (subset.clone(), 1u64..=2).prop_map(|(k, c)| Step::Check(k, c)),
        1 => (subset.clone(), 1u64..=2).prop_map(|(k, c)| Step::Peek(k, c)),
        1 => (subset, 1u64..=2).prop_map(|(k, c)| Step::Refund(k, c)),
    ];
    prop::collection::vec(step, 1..60)
}

/// The differential's keys: one of each algorithm for one subject, a second GCRA subject.
pub(crate) fn differential_keys() -> [PolicyKey; 4] {
    [
        key(
            "w",
            Algorithm::sliding_window(4, Duration::from_secs(1)),
            "a",
        ),
        key(
            "l",
            Algorithm::sliding_log(3, Duration::from_millis(800)),
            "a",
        ),
        key(
            "g",
            Algorithm::token_bucket(3, Duration::from_secs(1), 4),
            "a",
        ),
        key(
            "g",
            Algorithm::token_bucket(3, Duration::from_secs(1), 4),
            "b",
        ),
    ]
}

/// Plays `steps` on a memory limiter and on `redis` (both on `clock`): every decision equal.
pub(crate) async fn replay(
    steps: &[Step],
    redis: &RedisLimiter,
    clock: &ManualClock,
) -> Result<(), TestCaseError> {
    let keys = differential_keys();
    let memory = MemoryLimiter::builder().clock(clock.clone()).build();
    for step in steps {
        let pick = |ix: &[usize]| ix.iter().map(|&i| keys[i].clone()).collect::<Vec<_>>();
        match step {
            Step::Advance(us) => clock.advance(Duration::from_micros(*us)),
            Step::Check(ix, cost) => {
                let ks = pick(ix);
                let m = memory.check(&ks, *cost).await.expect("memory");
                let r = redis.check(&ks, *cost).await.expect("redis");
                prop_assert_eq!(m, r, "check {:?}", step);
            }
            Step::Peek(ix, cost) => {
                let ks = pick(ix);
                let m = memory.peek(&ks, *cost).await.expect("memory");
                let r = redis.peek(&ks, *cost).await.expect("redis");
                prop_assert_eq!(m, r, "peek {:?}", step);
            }
            Step::Refund(ix, cost) => {
                let ks = pick(ix);
                memory.refund(&ks, *cost).await.expect("memory");
                redis.refund(&ks, *cost).await.expect("redis");
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The Lua twin of every algorithm gives bit-identical decisions to the Rust one, over
    /// random multi-policy schedules.
    #[test]
    fn redis_decides_exactly_like_memory(steps in steps()) {
        let Some(url) = support::redis_url("redis_only::redis_decides_exactly_like_memory") else {
            return Ok(());
        };
        runtime().block_on(async {
            let clock = ManualClock::starting_at(START);
            let redis = r::limiter(&url, "differential", &clock);
            replay(&steps, &redis, &clock).await
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// In front of Redis, remembered denials admit exactly what Redis alone admits: Redis's
    /// reported waits are never longer than the true ones, for every algorithm.
    #[test]
    fn remembered_denials_decide_like_redis_alone(steps in steps()) {
        let test = "redis_only::remembered_denials_decide_like_redis_alone";
        let Some(url) = support::redis_url(test) else {
            return Ok(());
        };
        runtime().block_on(async {
            let clock = ManualClock::starting_at(START);
            let cached = DenialCache::builder(r::limiter(&url, "denials", &clock))
                .clock(clock.clone())
                .build();
            let alone = r::limiter(&url, "denials-alone", &clock);
            let keys = differential_keys();
            for step in &steps {
                let pick = |ix: &[usize]| ix.iter().map(|&i| keys[i].clone()).collect::<Vec<_>>();
                match step {
                    Step::Advance(us) => clock.advance(Duration::from_micros(*us)),
                    Step::Check(ix, cost) | Step::Peek(ix, cost) => {
                        let ks = pick(ix);
                        let ours = cached.check(&ks, *cost).await.expect("redis").is_allowed();
                        let theirs = alone.check(&ks, *cost).await.expect("redis").is_allowed();
                        prop_assert_eq!(ours, theirs, "check {:?}", step);
                    }
                    Step::Refund(ix, cost) => {
                        let ks = pick(ix);
                        cached.refund(&ks, *cost).await.expect("redis");
                        alone.refund(&ks, *cost).await.expect("redis");
                    }
                }
            }
            Ok(())
        })?;
    }
}

/// 200 tasks on two pools (two "processes") race one key of each algorithm on server time:
/// exactly the capacity is admitted, never more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_never_over_admit() {
    let Some(url) = support::redis_url("redis_only::concurrent_clients_never_over_admit") else {
        return;
    };
    let prefix = support::unique_prefix("concurrent");
    let build = || {
        RedisLimiter::builder(r::pool(&url))
            .key_prefix(prefix.clone())
            .failure_mode(FailureMode::ReturnError)
            .timeout(Duration::from_secs(10))
            .build()
    };
    let (a, b) = (build(), build());
    for algorithm in [
        Algorithm::sliding_log(50, Duration::from_secs(3600)),
        Algorithm::token_bucket(1, Duration::from_secs(3600), 50),
        Algorithm::sliding_window(50, Duration::from_secs(3600)),
    ] {
        let k = key("race", algorithm, algorithm.as_str());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
                let k = k.clone();
                tokio::spawn(
                    async move { limiter.check(&[k], 1).await.expect("redis").is_allowed() },
                )
            })
            .collect();
        let mut admitted = 0;
        for task in tasks {
            admitted += u32::from(task.await.expect("task"));
        }
        // A sliding window that straddles an hour boundary could legitimately admit a few more;
        // the hour-long window makes that a 1-in-60 000 chance per run, and the assertion says so.
        assert_eq!(
            admitted,
            50,
            "{}: admitted {admitted} of 200",
            algorithm.as_str()
        );
    }
}

#[tokio::test]
async fn keys_expire_when_their_state_is_idle_and_scripts_reload() {
    let Some(url) =
        support::redis_url("redis_only::keys_expire_when_their_state_is_idle_and_scripts_reload")
    else {
        return;
    };
    let clock = ManualClock::starting_at(START);
    let limiter = r::limiter(&url, "expiry", &clock);
    let k = key(
        "tb",
        Algorithm::token_bucket(1, Duration::from_secs(10), 5),
        "alice",
    );
    limiter
        .check(std::slice::from_ref(&k), 2)
        .await
        .expect("redis");
    let mut conn = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis reachable");
    let ttl: i64 = conn.pttl(limiter.redis_key(&k)).await.expect("pttl");
    // Two tokens of 10 s each: the state is equivalent to "no state" 20 s from now, and on an
    // injected clock Redis keeps it a minute longer.
    assert!((79_000..=80_000).contains(&ttl), "pttl = {ttl}");
    // A clock that stands still while Redis's runs on still finds its state.
    let idle_soon = key(
        "soon",
        Algorithm::token_bucket(1000, Duration::from_secs(1), 1),
        "a",
    );
    limiter
        .check(std::slice::from_ref(&idle_soon), 1)
        .await
        .expect("redis");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = limiter
        .check(std::slice::from_ref(&idle_soon), 1)
        .await
        .expect("redis");
    assert!(
        !again.is_allowed(),
        "a state idle in 1 ms by the clock vanished after 5 ms of Redis's time"
    );

    // On Redis's own clock the expiry is the idle instant itself.
    let on_server_time = RedisLimiter::builder(r::pool(&url))
        .key_prefix(support::unique_prefix("expiry-server-time"))
        .failure_mode(FailureMode::ReturnError)
        .build();
    on_server_time
        .check(std::slice::from_ref(&k), 2)
        .await
        .expect("redis");
    let ttl: i64 = conn.pttl(on_server_time.redis_key(&k)).await.expect("pttl");
    assert!((19_000..=20_000).contains(&ttl), "pttl = {ttl}");
    assert!(
        limiter.redis_key(&k).ends_with("{tb:alice}"),
        "hash tag per policy key"
    );

    // A Redis restart or failover empties the script cache: the next call reloads it.
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("flush");
    let decision = limiter
        .check(std::slice::from_ref(&k), 1)
        .await
        .expect("reloaded");
    assert_eq!(decision.policies()[0].remaining(), 2);
    assert_eq!(limiter.stats().redis_errors, 0);
}

/// A key that holds something the script did not write — a list, or text that is not a
/// number — is decided as a key never seen and overwritten by the first admission, on the
/// single-GCRA path and on the general one alike.
#[tokio::test]
async fn a_key_holding_foreign_data_is_decided_as_new_and_repaired() {
    let Some(url) =
        support::redis_url("redis_only::a_key_holding_foreign_data_is_decided_as_new_and_repaired")
    else {
        return;
    };
    let clock = ManualClock::starting_at(START);
    let limiter = r::limiter(&url, "foreign", &clock);
    let mut conn = r::multiplexed(&url).await;
    let gcra = Algorithm::token_bucket(1, Duration::from_secs(10), 3);
    let window = Algorithm::sliding_window(5, Duration::from_secs(10));
    for (subject, list) in [("text", false), ("list", true)] {
        let single = [key("g", gcra, subject)];
        let several = [key("g2", gcra, subject), key("w", window, subject)];
        for keys in [&single[..], &several[..]] {
            for k in keys {
                let redis_key = limiter.redis_key(k);
                let _: () = if list {
                    conn.rpush(&redis_key, "not-a-state").await.expect("rpush")
                } else {
                    conn.set(&redis_key, "not-a-number").await.expect("set")
                };
            }
            let peeked = limiter.peek(keys, 1).await.expect("redis");
            assert!(peeked.is_allowed(), "{subject}: {peeked:?}");
            assert_eq!(
                peeked.policies()[0].remaining(),
                3,
                "{subject}: peek as new"
            );
            let checked = limiter.check(keys, 1).await.expect("redis");
            assert_eq!(
                checked.policies()[0].remaining(),
                2,
                "{subject}: check as new"
            );
            let again = limiter.check(keys, 1).await.expect("redis");
            assert_eq!(
                again.policies()[0].remaining(),
                1,
                "{subject}: state written"
            );
        }
    }
    assert_eq!(limiter.stats().redis_errors, 0);
}

/// A pool pointing at a port nobody listens on.
fn unreachable_pool() -> deadpool_redis::Pool {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    r::pool(&format!("redis://127.0.0.1:{port}"))
}

#[tokio::test]
async fn each_failure_mode_does_what_it_says_and_is_counted() {
    let k = [key(
        "p",
        Algorithm::sliding_window(2, Duration::from_secs(60)),
        "alice",
    )];
    let limiter = |mode| {
        RedisLimiter::builder(unreachable_pool())
            .failure_mode(mode)
            .timeout(Duration::from_secs(2))
            .build()
    };

    let open = limiter(FailureMode::FailOpen);
    let d = open.check(&k, 1).await.expect("fails open");
    assert!(d.is_allowed() && d.is_degraded());
    assert_eq!(open.stats().failed_open, 1);
    assert!(open.is_degraded());

    let closed = limiter(FailureMode::FailClosed {
        retry_after: Duration::from_secs(5),
    });
    let d = closed.check(&k, 1).await.expect("fails closed");
    assert!(!d.is_allowed() && d.is_degraded());
    assert_eq!(d.retry_after(), Some(Duration::from_secs(5)));
    assert_eq!(closed.stats().failed_closed, 1);

    let local = limiter(FailureMode::LocalFallback);
    for expected in [true, true, false] {
        let d = local.check(&k, 1).await.expect("falls back");
        assert_eq!(d.is_allowed(), expected);
        assert!(d.is_degraded());
    }
    let stats = local.stats();
    assert_eq!(
        (
            stats.fallback_decisions,
            stats.redis_errors,
            stats.redis_calls
        ),
        (3, 3, 0)
    );

    let strict = limiter(FailureMode::ReturnError);
    let err = strict.check(&k, 1).await.expect_err("returns the error");
    assert!(err.is_transient(), "{err}");
    assert!(strict.ping().await.is_err());
}

/// A TCP forwarder to the real Redis that the test can cut and restore, to take Redis away
/// mid-run without touching the shared server.
async fn cuttable_proxy(target: String) -> (u16, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (up, _) = watch::channel(true);
    let state = up.subscribe();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let mut state = state.clone();
            if !*state.borrow() {
                continue; // dropped: the connection is refused in effect
            }
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(target).await else {
                    return;
                };
                tokio::select! {
                    _ = copy_bidirectional(&mut client, &mut server) => {}
                    _ = state.wait_for(|up| !*up) => {}
                }
            });
        }
    });
    (port, up)
}

#[tokio::test]
async fn falls_back_while_redis_is_away_and_recovers_by_itself() {
    let Some(url) =
        support::redis_url("redis_only::falls_back_while_redis_is_away_and_recovers_by_itself")
    else {
        return;
    };
    let (port, up) = cuttable_proxy(proxied(&url)).await;
    let pool = r::pool(&format!("redis://127.0.0.1:{port}"));
    outage_and_recovery(pool.into(), &up).await;
}

/// The same through one multiplexed connection, which re-connects by itself.
#[tokio::test]
async fn a_multiplexed_connection_falls_back_and_reconnects_by_itself() {
    let Some(url) = support::redis_url(
        "redis_only::a_multiplexed_connection_falls_back_and_reconnects_by_itself",
    ) else {
        return;
    };
    let (port, up) = cuttable_proxy(proxied(&url)).await;
    let connection = r::multiplexed(&format!("redis://127.0.0.1:{port}")).await;
    outage_and_recovery(connection.into(), &up).await;
}

/// `host:port` of a `redis://host:port` URL.
fn proxied(url: &str) -> String {
    url.trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned()
}

/// Redis cut under a local-fallback limiter on `connection` (through the proxy `up` steers):
/// degraded decisions, counted; restored: back on Redis with no restart.
async fn outage_and_recovery(connection: RedisConnection, up: &watch::Sender<bool>) {
    let limiter = RedisLimiter::builder(connection)
        .key_prefix(support::unique_prefix("recovery"))
        .failure_mode(FailureMode::LocalFallback)
        .timeout(Duration::from_millis(500))
        .build();
    let k = [key(
        "p",
        Algorithm::sliding_log(100, Duration::from_secs(60)),
        "alice",
    )];

    let d = limiter.check(&k, 1).await.expect("redis");
    assert!(!d.is_degraded());
    assert!(limiter.ping().await.is_ok());

    up.send_replace(false);
    for _ in 0..3 {
        let d = limiter.check(&k, 1).await.expect("fallback");
        assert!(d.is_allowed() && d.is_degraded());
    }
    assert!(limiter.is_degraded());
    assert_eq!(limiter.stats().fallback_decisions, 3);

    up.send_replace(true);
    // A pool drops the dead connection on its first failed use, a multiplexed connection
    // re-connects after it (with a short backoff): within a few calls Redis is used again,
    // with no restart.
    let mut recovered = false;
    for _ in 0..40 {
        if !limiter.check(&k, 1).await.expect("answers").is_degraded() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "still degraded: {:?}", limiter.stats());
    assert!(!limiter.is_degraded());
    // Redis kept its own count: 1 before the outage plus the recovering call(s).
    let left = limiter.peek(&k, 1).await.expect("redis").policies()[0].remaining();
    assert!((97..=98).contains(&left), "remaining {left}");
}
