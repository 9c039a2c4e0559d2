//! Redis limiter vs a raw `EVALSHA` of a trivial script, same pool settings, same concurrency.
//!
//! Run: `TEST_REDIS_URL=redis://127.0.0.1:6379 cargo bench --bench ratelimit_redis` (skipped with
//! a message when the variable is unset). The ratio that matters is tollgate / raw: the raw call
//! is the floor of one round trip through deadpool-redis, so the difference is the cost of the
//! decision script and of building and parsing its arguments. The `multiplexed` rows do the
//! same over one shared connection instead of a pool.

mod support;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use tollgate_ratelimit::{
    Algorithm, Policy, PolicyKey, PolicySet, RateLimiter, RequestContext, Scope,
};

const KEYS: usize = 10_000;

use support::{Raw, redis_pool as pool};

/// Runs `iters` operations split over `concurrency` tasks and returns the wall time.
async fn split<F, Fut>(concurrency: usize, iters: u64, op: F) -> Duration
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let per_task = iters.div_ceil(concurrency as u64);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let op = Arc::clone(&op);
            tokio::spawn(async move {
                for i in 0..per_task {
                    op(t, i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    started.elapsed()
}

/// The server's table: the library defaults plus the payments endpoint's own limit.
fn server_table() -> PolicySet {
    let payments = Policy::new(
        "payments",
        Scope::User,
        Algorithm::sliding_window(10, Duration::from_secs(60)),
    )
    .expect("valid")
    .for_endpoint("POST /api/v1/payments");
    PolicySet::defaults().with(2, payments).expect("a new name")
}

fn bench(c: &mut Criterion) {
    let Ok(url) = std::env::var("TEST_REDIS_URL") else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED ratelimit_redis: set TEST_REDIS_URL=redis://127.0.0.1:6379 to run it"
        );
        return;
    };
    let rt = support::runtime();
    let keys: Arc<Vec<[PolicyKey; 1]>> =
        Arc::new(support::user_keys(&support::always_admits(1_000_000), KEYS));
    let defaults = server_table();
    let users: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("user-{i}")).collect());

    let prefix = format!("tollgate-bench:{}:", std::process::id());
    for &concurrency in &[1usize, 16] {
        let pool = pool(&url, concurrency);
        let manager = rt.block_on(support::multiplexed(&url));
        let limiter = support::bench_limiter(pool.clone(), &prefix);
        // The same over one multiplexed connection (no pool, no PING per checkout), both sides.
        let multiplexed = support::bench_limiter(manager.clone(), &prefix);
        let raws = [
            ("noop", Raw::Pool(pool)),
            ("multiplexed", Raw::Multiplexed(manager)),
        ];
        let sha = rt.block_on(support::load_noop(&raws[0].1));

        let mut group = c.benchmark_group(format!("redis/{concurrency}_concurrent"));
        group.throughput(Throughput::Elements(1));
        group
            .sample_size(20)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));

        for (name, raw) in &raws {
            group.bench_function(BenchmarkId::new("raw_evalsha", name), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let (raw, sha) = (raw.clone(), sha.clone());
                    split(concurrency, iters, move |_, _| {
                        let (raw, sha) = (raw.clone(), sha.clone());
                        async move { support::noop(&raw, &sha).await }
                    })
                })
            });
        }
        for (name, limiter) in [
            ("1_policy", &limiter),
            ("1_policy_multiplexed", &multiplexed),
        ] {
            group.bench_function(BenchmarkId::new("tollgate", name), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let (limiter, keys) = (limiter.clone(), Arc::clone(&keys));
                    split(concurrency, iters, move |t, i| {
                        let (limiter, keys) = (limiter.clone(), Arc::clone(&keys));
                        async move {
                            let k = &keys[(t * 7_919 + i as usize * 31) % KEYS];
                            limiter.check(k, 1).await.expect("redis");
                        }
                    })
                })
            });
        }
        group.bench_function(BenchmarkId::new("tollgate", "4_policies"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (limiter, users, defaults) =
                    (limiter.clone(), Arc::clone(&users), defaults.clone());
                split(concurrency, iters, move |t, i| {
                    let (limiter, users, defaults) =
                        (limiter.clone(), Arc::clone(&users), defaults.clone());
                    async move {
                        let user = &users[(t * 7_919 + i as usize * 31) % KEYS];
                        let ctx = RequestContext::new()
                            .user(user)
                            .endpoint("POST /api/v1/payments");
                        let keys = defaults.keys_for(&ctx);
                        limiter.check(&keys, 1).await.expect("redis");
                    }
                })
            })
        });
        group.finish();
        assert_eq!(limiter.stats().redis_errors, 0);
        assert_eq!(multiplexed.stats().redis_errors, 0);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
