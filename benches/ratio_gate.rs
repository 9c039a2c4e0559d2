//! The ratio gate: each headline ratio of `docs/performance.md` that a library bench measures,
//! taken again against its peer in one short run, fails when it falls below its floor.
//!
//! Run: `cargo bench --bench ratio_gate` (CI runs it with every bench, `-- --test`); the Redis
//! rows need `TEST_REDIS_URL`. A ratio is the peer's time over ours, so above 1 means we are
//! faster. Each is the median of alternating short rounds, ours and the peer's in turn, so a
//! slow moment of the machine hits both sides.
//!
//! Each floor is about half the documented median: single runs on these VMs move by ±30 %, so a
//! floor that close to the median would fail on noise, while a halving is a real regression (a
//! lost fast path, a lock or an allocation added per call). The HTTP rows of the performance
//! document need server processes and are not gated here.

mod support;

use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use governor::DefaultKeyedRateLimiter;
use support::Raw;
use tollgate_ratelimit::redis::RedisLimiter;
use tollgate_ratelimit::{DynRateLimiter, MemoryLimiter, PolicyKey, RateLimiter};

/// One gated ratio.
struct Row {
    name: &'static str,
    documented: f64,
    floor: f64,
    measured: f64,
}

/// The median over `rounds` of `peer() / ours()`, the two alternating.
fn median_ratio(
    rounds: usize,
    mut ours: impl FnMut() -> Duration,
    mut peer: impl FnMut() -> Duration,
) -> f64 {
    let mut ratios: Vec<f64> = (0..rounds)
        .map(|_| {
            let ours = ours();
            let peer = peer();
            peer.as_secs_f64() / ours.as_secs_f64().max(1e-9)
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[rounds / 2]
}

fn timed(work: impl FnOnce()) -> Duration {
    let started = Instant::now();
    work();
    started.elapsed()
}

/// A future that is ready at once (the memory limiter's), polled without a runtime.
fn ready<T>(future: impl std::future::Future<Output = T>) -> T {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("the memory limiter never waits"),
    }
}

const RATE: u32 = 1_000_000;
const KEYS: usize = 10_000;
const DECISIONS: usize = 200_000;

/// The memory limiter (one GCRA policy, 10 k keys, one thread) against governor with the same
/// key text and with integer keys, and its trait call and trait-object call against its sync call.
fn memory_rows() -> Vec<Row> {
    let policy = support::always_admits(RATE);
    let quota = support::governor_quota(RATE);
    let names: Vec<String> = (0..KEYS).map(|i| format!("user-{i}")).collect();
    let keys = support::user_keys(&policy, KEYS);
    let ids: Vec<u64> = (0..KEYS as u64).collect();
    let visit: Vec<usize> = (0..DECISIONS).map(|i| (i * 7_919) % KEYS).collect();
    let ours = MemoryLimiter::builder().max_keys(4 * KEYS).build();
    let by_name: DefaultKeyedRateLimiter<String> = DefaultKeyedRateLimiter::keyed(quota);
    let by_id: DefaultKeyedRateLimiter<u64> = DefaultKeyedRateLimiter::keyed(quota);
    for i in 0..KEYS {
        ours.check_now(&keys[i], 1).expect("valid");
        let _ = by_name.check_key(&names[i]);
        let _ = by_id.check_key(&ids[i]);
    }
    let sync = || {
        timed(|| {
            for &i in &visit {
                black_box(ours.check_now(&keys[i], 1).expect("valid").is_allowed());
            }
        })
    };
    let through_trait = || {
        timed(|| {
            for &i in &visit {
                let decision = ready(RateLimiter::check(&ours, &keys[i], 1)).expect("valid");
                black_box(decision.is_allowed());
            }
        })
    };
    let through_dyn = || {
        let limiter: &dyn DynRateLimiter = &ours;
        timed(|| {
            for &i in &visit {
                let decision = ready(limiter.check(&keys[i], 1)).expect("valid");
                black_box(decision.is_allowed());
            }
        })
    };
    let governor_names = || {
        timed(|| {
            for &i in &visit {
                black_box(by_name.check_key(&names[i]).is_ok());
            }
        })
    };
    let governor_ids = || {
        timed(|| {
            for &i in &visit {
                black_box(by_id.check_key(&ids[i]).is_ok());
            }
        })
    };
    vec![
        Row {
            name: "memory limiter vs governor, String keys",
            documented: 1.83,
            floor: 0.9,
            measured: median_ratio(7, sync, governor_names),
        },
        Row {
            name: "memory limiter vs governor, u64 keys",
            documented: 0.98,
            floor: 0.5,
            measured: median_ratio(7, sync, governor_ids),
        },
        Row {
            name: "the RateLimiter trait call vs the sync call",
            documented: 1.03,
            floor: 0.45,
            measured: median_ratio(7, through_trait, sync),
        },
        Row {
            name: "the DynRateLimiter trait object vs the sync call",
            documented: 0.56,
            floor: 0.25,
            measured: median_ratio(7, through_dyn, sync),
        },
    ]
}

/// Deciding 1 M subjects spread over four tiers against the same subjects with no tiers (the
/// keys picked from the set, then decided).
fn tier_rows() -> Vec<Row> {
    const SUBJECTS: usize = 1_000_000;
    let tiers = support::Tiers::new(SUBJECTS);
    let flat = tiers.warmed(&tiers.flat, false);
    let tiered = tiers.warmed(&tiers.tiered, true);
    let visit: Vec<usize> = (0..DECISIONS).map(|i| (i * 7_919) % SUBJECTS).collect();
    let run = |limiter: &MemoryLimiter, set, with_tier| {
        timed(|| {
            for &i in &visit {
                black_box(tiers.decide(limiter, set, i, with_tier));
            }
        })
    };
    vec![Row {
        name: "deciding with four tiers vs with none, 1 M subjects",
        documented: 0.94,
        // Not half the median like the others: tiers promise to cost about a tenth more at
        // most. Fresh-clone CI runs read 0.92–1.01, so a floor at exactly 1/1.1 would fail on
        // noise now and then; 0.85 still catches a tier lookup that starts to allocate or scan.
        floor: 0.85,
        measured: median_ratio(
            7,
            || run(&tiered, &tiers.tiered, true),
            || run(&flat, &tiers.flat, false),
        ),
    }]
}

/// Runs `count` calls of `op` over 16 tasks; the wall time.
async fn sixteen_way<F, Fut>(count: usize, op: F) -> Duration
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let op = Arc::clone(&op);
            tokio::spawn(async move {
                for i in 0..count / 16 {
                    op(t * 7_919 + i * 31).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    started.elapsed()
}

/// The Redis limiter (one GCRA key, 16 concurrent callers) against `EVALSHA` of `return 1` on
/// the same kind of connection, and the multiplexed connection against the pool.
fn redis_rows(url: &str) -> Vec<Row> {
    let rt = support::runtime();
    let keys: Arc<Vec<[PolicyKey; 1]>> =
        Arc::new(support::user_keys(&support::always_admits(RATE), KEYS));
    let prefix = format!("tollgate-gate:{}:", std::process::id());
    let pool = support::redis_pool(url, 16);
    let manager = rt.block_on(support::multiplexed(url));
    let pooled = support::bench_limiter(pool.clone(), &prefix);
    let multiplexed = support::bench_limiter(manager.clone(), &prefix);
    let (pool, manager) = (Raw::Pool(pool), Raw::Multiplexed(manager));
    let sha = rt.block_on(support::load_noop(&manager));
    const CALLS: usize = 2_000;
    // A round takes about 0.1 s. A median of five once read 1.04x on a row whose runs read
    // 1.4-1.9x, and a median of eleven 1.06x (2026-12-05, between runs of 1.45x and 1.56x):
    // twenty-one rounds cost two seconds and ride out a slow stretch of the machine.
    const REDIS_ROUNDS: usize = 21;
    let decide = |limiter: &RedisLimiter| {
        let (limiter, keys) = (limiter.clone(), Arc::clone(&keys));
        rt.block_on(sixteen_way(CALLS, move |i| {
            let (limiter, keys) = (limiter.clone(), Arc::clone(&keys));
            async move {
                limiter.check(&keys[i % KEYS], 1).await.expect("redis");
            }
        }))
    };
    let raw = |connection: &Raw| {
        let (connection, sha) = (connection.clone(), sha.clone());
        rt.block_on(sixteen_way(CALLS, move |_| {
            let (connection, sha) = (connection.clone(), sha.clone());
            async move { support::noop(&connection, &sha).await }
        }))
    };
    // Warm both connections and load the decision script.
    decide(&pooled);
    decide(&multiplexed);
    let rows = vec![
        Row {
            name: "Redis limiter vs raw EVALSHA, pool, 16 concurrent",
            documented: 0.75,
            floor: 0.35,
            measured: median_ratio(REDIS_ROUNDS, || decide(&pooled), || raw(&pool)),
        },
        Row {
            name: "Redis limiter vs raw EVALSHA, multiplexed, 16 concurrent",
            documented: 0.32,
            floor: 0.12,
            measured: median_ratio(REDIS_ROUNDS, || decide(&multiplexed), || raw(&manager)),
        },
        Row {
            name: "Redis limiter, multiplexed vs pool, 16 concurrent",
            documented: 1.65,
            floor: 1.1,
            measured: median_ratio(REDIS_ROUNDS, || decide(&multiplexed), || decide(&pooled)),
        },
    ];
    assert_eq!(
        pooled.stats().redis_errors + multiplexed.stats().redis_errors,
        0
    );
    rows
}

fn main() {
    let mut rows = memory_rows();
    rows.extend(tier_rows());
    match std::env::var("TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => rows.extend(redis_rows(&url)),
        _ => println!(
            "SKIPPED ratio_gate (Redis rows): set TEST_REDIS_URL=redis://127.0.0.1:6379 to run them"
        ),
    }
    let mut failed = 0;
    for row in &rows {
        let verdict = if row.measured >= row.floor {
            "ok"
        } else {
            failed += 1;
            "BELOW THE FLOOR"
        };
        println!(
            "ratio gate: {:<58} {:>5.2}x (documented {:.2}x, floor {:.2}x) {verdict}",
            row.name, row.measured, row.documented, row.floor
        );
    }
    assert!(failed == 0, "{failed} ratio(s) below their floor");
}
