//! Redis Cluster: a decision whose keys live in several slots (and so on several primaries) is
//! split per slot and refunded where another slot denies. The same differential against memory
//! as on one Redis, races between two connections ("processes"), and the slots actually spread.

use std::collections::HashSet;
use std::time::Duration;

use proptest::prelude::*;
use redis::cluster_async::ClusterConnection;
use tollgate_ratelimit::clock::ManualClock;
use tollgate_ratelimit::redis::{FailureMode, RedisLimiter};
use tollgate_ratelimit::{Algorithm, PolicyKey, RateLimiter};

use crate::redis_only::{differential_keys, key, replay, runtime, steps};
use crate::support::{self, START, redis as r};

/// The `host:port` of the primary serving each slot range, from `CLUSTER SLOTS`.
async fn slot_owners(conn: &mut ClusterConnection) -> Vec<(u16, u16, String)> {
    let ranges: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(conn)
        .await
        .expect("cluster slots");
    ranges
        .into_iter()
        .filter_map(|range| {
            let redis::Value::Array(parts) = range else {
                return None;
            };
            let int = |v: &redis::Value| match v {
                redis::Value::Int(i) => u16::try_from(*i).ok(),
                _ => None,
            };
            let redis::Value::Array(primary) = parts.get(2)? else {
                return None;
            };
            let host = match primary.first()? {
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                _ => return None,
            };
            let port = int(primary.get(1)?)?;
            Some((int(&parts[0])?, int(&parts[1])?, format!("{host}:{port}")))
        })
        .collect()
}

/// The primaries `keys` live on.
async fn primaries_of(
    conn: &mut ClusterConnection,
    limiter: &RedisLimiter,
    keys: &[PolicyKey],
) -> HashSet<String> {
    let owners = slot_owners(conn).await;
    let mut primaries = HashSet::new();
    for k in keys {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(limiter.redis_key(k))
            .query_async(conn)
            .await
            .expect("cluster keyslot");
        if let Some((_, _, node)) = owners.iter().find(|(a, b, _)| (*a..=*b).contains(&slot)) {
            primaries.insert(node.clone());
        }
    }
    primaries
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Split per slot and refunded, a cluster still decides bit for bit like one process.
    #[test]
    fn cluster_decides_exactly_like_memory(steps in steps()) {
        let Some(urls) = support::redis_cluster_urls("cluster_only::cluster_decides_exactly_like_memory") else {
            return Ok(());
        };
        runtime().block_on(async {
            let clock = ManualClock::starting_at(START);
            let redis = r::cluster_limiter(&urls, "differential", &clock).await;
            replay(&steps, &redis, &clock).await
        })?;
    }
}

/// The differential's keys really are split: more than one primary holds them.
#[tokio::test]
async fn a_request_s_keys_spread_over_several_primaries() {
    let Some(urls) =
        support::redis_cluster_urls("cluster_only::a_request_s_keys_spread_over_several_primaries")
    else {
        return;
    };
    let clock = ManualClock::starting_at(START);
    let limiter = r::cluster_limiter(&urls, "spread", &clock).await;
    let mut conn = r::cluster(&urls).await;
    let keys = differential_keys();
    let primaries = primaries_of(&mut conn, &limiter, &keys).await;
    assert!(primaries.len() >= 2, "keys on {primaries:?}");
    let users: Vec<PolicyKey> = (0..30)
        .map(|i| {
            key(
                "per-user",
                Algorithm::sliding_window(5, Duration::from_secs(60)),
                &format!("user-{i}"),
            )
        })
        .collect();
    assert_eq!(primaries_of(&mut conn, &limiter, &users).await.len(), 3);
}

/// 20 users × 10 requests race a global limit of 50 from two connections, each request
/// checking its user's key and the global key (different slots). Never more than the limits
/// are admitted, and every refused request left nothing behind: each user's quota is short by
/// exactly what it was admitted, and so is the global one. (Fewer than 50 may be admitted: a
/// request its user refuses holds a global unit until its refund lands, one round trip.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_leave_exact_quotas_under_races() {
    let Some(urls) =
        support::redis_cluster_urls("cluster_only::refunds_leave_exact_quotas_under_races")
    else {
        return;
    };
    let prefix = support::unique_prefix("cluster-race");
    let mut limiters = Vec::new();
    for _ in 0..2 {
        limiters.push(
            RedisLimiter::builder(r::cluster(&urls).await)
                .key_prefix(prefix.clone())
                .failure_mode(FailureMode::ReturnError)
                .timeout(Duration::from_secs(10))
                .build(),
        );
    }
    let hour = Duration::from_secs(3600);
    let global = key("global", Algorithm::token_bucket(1, hour, 50), "all");
    let user = |u: usize| {
        key(
            "user",
            Algorithm::token_bucket(1, hour, 5),
            &format!("u{u}"),
        )
    };
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let limiter = limiters[i % 2].clone();
            let keys = [user(i % 20), global.clone()];
            tokio::spawn(async move {
                let decision = limiter.check(&keys, 1).await.expect("cluster answers");
                (i % 20, decision.is_allowed())
            })
        })
        .collect();
    let mut admitted = [0u64; 20];
    for task in tasks {
        let (u, allowed) = task.await.expect("task");
        admitted[u] += u64::from(allowed);
    }
    let total = admitted.iter().sum::<u64>();
    assert!(
        (1..=50).contains(&total),
        "admitted {total}, per user {admitted:?}"
    );
    let limiter = &limiters[0];
    for (u, n) in admitted.iter().enumerate() {
        assert!(*n <= 5, "user {u} admitted {n}");
        let keys = [user(u)];
        let left = limiter.peek(&keys, 1).await.expect("peek");
        assert_eq!(left.policies()[0].remaining(), 5 - n, "user {u}");
    }
    let left = limiter
        .peek(std::slice::from_ref(&global), 1)
        .await
        .expect("peek");
    assert_eq!(left.policies()[0].remaining(), 50 - total);
    assert_eq!(limiter.stats().redis_errors, 0);
}
