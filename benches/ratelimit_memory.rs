//! Memory limiter vs governor (keyed), same run, same keys, same quota, 1 and 2 threads.
//!
//! Run: `cargo bench --bench ratelimit_memory`. Both limiters run GCRA with a quota large enough
//! that every decision admits (the hot path of a healthy service). Keys are visited in a
//! scattered order so the 1M-key runs measure cache misses, not one hot line.
//!
//! Contenders:
//! - `tollgate/sync`: `MemoryLimiter::check_now` (what the async trait calls underneath);
//! - `tollgate/async`: the `RateLimiter` trait on the named type, polled without a runtime;
//! - `tollgate/dyn`: the same through `&dyn DynRateLimiter` (one boxed future per call);
//! - `tollgate/key_per_call`: `check_now` on a `PolicyKey` built from the text for each call;
//! - `governor/string`: `DefaultKeyedRateLimiter<String>` (same key text as tollgate);
//! - `governor/string_per_call`: the same with its `String` key built from the text per call;
//! - `governor/u64`: `DefaultKeyedRateLimiter<u64>`, governor's cheapest key.
//!
//! A second set of groups, `memory/algorithms/…`, puts the sliding-window counter beside GCRA
//! in the same limiter (both admit every decision), so the window's cost is read as a ratio.
//! And `memory/tiers/…` decides 1 M subjects spread over four tiers beside the same subjects
//! with no tiers: the keys picked from the policy set, then decided.

mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main};
use governor::DefaultKeyedRateLimiter;
use tollgate_ratelimit::{DynRateLimiter, MemoryLimiter, Policy, PolicyKey, RateLimiter};

const RATE: u32 = 1_000_000;

/// A visiting order that jumps around the key space (a full-period stride).
fn order(n: usize) -> Vec<usize> {
    let stride = 7_919; // prime, coprime with every n used here
    (0..n).map(|i| (i * stride) % n).collect()
}

/// `check_now` on `keys[at(thread, i)]`, the iterations split over `threads` threads.
fn bench_check_now(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    limiter: &MemoryLimiter,
    keys: &[[PolicyKey; 1]],
    threads: usize,
    at: &(impl Fn(usize, u64) -> usize + Sync),
) {
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            on_threads(threads, iters, |t, k| {
                for i in 0..k {
                    let decision = limiter.check_now(&keys[at(t, i)], 1);
                    black_box(decision.map(|d| d.is_allowed()).ok());
                }
            })
        })
    });
}

/// The tollgate calls measured on one thread only: through the `RateLimiter` trait, with the
/// key built for each call, and through a `DynRateLimiter` trait object.
fn bench_tollgate_calls(
    group: &mut BenchmarkGroup<'_, WallTime>,
    ours: &MemoryLimiter,
    keys: &[[PolicyKey; 1]],
    names: &[String],
    policy: &Arc<Policy>,
    at: &(impl Fn(usize, u64) -> usize + Sync),
) {
    group.bench_function(BenchmarkId::new("tollgate", "async"), |b| {
        b.iter_custom(|iters| {
            on_threads(1, iters, |t, k| {
                for i in 0..k {
                    let future = RateLimiter::check(ours, &keys[at(t, i)], 1);
                    black_box(support::poll_ready(future).map(|d| d.is_allowed()).ok());
                }
            })
        })
    });
    // What a caller pays with only the key's text at hand (the HTTP layer builds its keys per
    // request): the key, its escaping and its 128-bit hash, then the decision. governor/string
    // hashes its key per call too.
    group.bench_function(BenchmarkId::new("tollgate", "key_per_call"), |b| {
        b.iter_custom(|iters| {
            on_threads(1, iters, |t, k| {
                for i in 0..k {
                    let key = PolicyKey::new(Arc::clone(policy), &names[at(t, i)]);
                    let decision = ours.check_now(std::slice::from_ref(&key), 1);
                    black_box(decision.map(|d| d.is_allowed()).ok());
                }
            })
        })
    });
    let object: &dyn DynRateLimiter = ours;
    group.bench_function(BenchmarkId::new("tollgate", "dyn"), |b| {
        b.iter_custom(|iters| {
            on_threads(1, iters, |t, k| {
                for i in 0..k {
                    let future = object.check(&keys[at(t, i)], 1);
                    black_box(support::poll_ready(future).map(|d| d.is_allowed()).ok());
                }
            })
        })
    });
}

/// Runs `per_thread` decisions on each of `threads` threads and returns the wall time.
fn on_threads(threads: usize, iters: u64, work: impl Fn(usize, u64) + Sync) -> Duration {
    let per_thread = iters.div_ceil(threads as u64);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let work = &work;
            s.spawn(move || work(t, per_thread));
        }
    });
    started.elapsed()
}

fn bench(c: &mut Criterion) {
    let policy = support::always_admits(RATE);
    let quota = support::governor_quota(RATE);

    for &n in &[10_000usize, 1_000_000] {
        let names: Vec<String> = (0..n).map(|i| format!("user-{i}")).collect();
        let keys: Vec<[PolicyKey; 1]> = names
            .iter()
            .map(|s| [PolicyKey::new(Arc::clone(&policy), s)])
            .collect();
        let ids: Vec<u64> = (0..n as u64).collect();
        let visit = order(n);

        let ours = MemoryLimiter::builder().max_keys(4 * n).build();
        let theirs_s: DefaultKeyedRateLimiter<String> = DefaultKeyedRateLimiter::keyed(quota);
        let theirs_u: DefaultKeyedRateLimiter<u64> = DefaultKeyedRateLimiter::keyed(quota);
        // Prefill: measure decisions on known keys, not first-time inserts.
        for i in 0..n {
            ours.check_now(&keys[i], 1).expect("valid");
            let _ = theirs_s.check_key(&names[i]);
            let _ = theirs_u.check_key(&ids[i]);
        }

        for &threads in &[1usize, 2] {
            let mut group =
                support::per_element_group(c, format!("memory/{n}_keys/{threads}_threads"));
            let at = |t: usize, i: u64| visit[(t * n / 2 + i as usize) % n];

            let id = BenchmarkId::new("tollgate", "sync");
            bench_check_now(&mut group, id, &ours, &keys, threads, &at);
            if threads == 1 {
                bench_tollgate_calls(&mut group, &ours, &keys, &names, &policy, &at);
            }
            group.bench_function(BenchmarkId::new("governor", "string"), |b| {
                b.iter_custom(|iters| {
                    on_threads(threads, iters, |t, k| {
                        for i in 0..k {
                            black_box(theirs_s.check_key(&names[at(t, i)]).is_ok());
                        }
                    })
                })
            });
            if threads == 1 {
                // governor with only the text at hand: its `String` key is built per call.
                group.bench_function(BenchmarkId::new("governor", "string_per_call"), |b| {
                    b.iter_custom(|iters| {
                        on_threads(1, iters, |t, k| {
                            for i in 0..k {
                                let key = names[at(t, i)].as_str().to_owned();
                                black_box(theirs_s.check_key(&key).is_ok());
                            }
                        })
                    })
                });
            }
            group.bench_function(BenchmarkId::new("governor", "u64"), |b| {
                b.iter_custom(|iters| {
                    on_threads(threads, iters, |t, k| {
                        for i in 0..k {
                            black_box(theirs_u.check_key(&ids[at(t, i)]).is_ok());
                        }
                    })
                })
            });
            group.finish();
        }
    }
}

/// The same limiter deciding GCRA keys and sliding-window keys: what a window decision costs
/// beside the GCRA one, on known keys, 1 and 2 threads.
fn bench_algorithms(c: &mut Criterion) {
    let n = 10_000;
    let window = Arc::new(
        Policy::new(
            "w",
            tollgate_ratelimit::Scope::User,
            // At most a few thousand decisions per key and second here: every one admits.
            tollgate_ratelimit::Algorithm::sliding_window(30_000, Duration::from_secs(1)),
        )
        .expect("valid policy"),
    );
    let contenders = [
        ("gcra", support::user_keys(&support::always_admits(RATE), n)),
        ("sliding_window", support::user_keys(&window, n)),
    ];
    let ours = MemoryLimiter::builder().max_keys(4 * n).build();
    for (_, keys) in &contenders {
        for key in keys {
            ours.check_now(key, 1).expect("valid");
        }
    }
    let visit = order(n);
    for &threads in &[1usize, 2] {
        let mut group =
            support::per_element_group(c, format!("memory/algorithms/{n}_keys/{threads}_threads"));
        let at = |t: usize, i: u64| visit[(t * n / 2 + i as usize) % n];
        for (name, keys) in &contenders {
            let id = BenchmarkId::new("tollgate", name);
            bench_check_now(&mut group, id, &ours, keys, threads, &at);
        }
        group.finish();
    }
}

/// Deciding with tiers beside deciding without, 1 M subjects: the keys picked from the set
/// (under the subject's tier for `tiered`) and decided, one thread.
fn bench_tiers(c: &mut Criterion) {
    let n = 1_000_000;
    let tiers = support::Tiers::new(n);
    let flat = tiers.warmed(&tiers.flat, false);
    let tiered = tiers.warmed(&tiers.tiered, true);
    let visit = order(n);
    let mut group = support::per_element_group(c, format!("memory/tiers/{n}_subjects"));
    for (name, limiter, set, with_tier) in [
        ("no_tiers", &flat, &tiers.flat, false),
        ("four_tiers", &tiered, &tiers.tiered, true),
    ] {
        group.bench_function(BenchmarkId::new("tollgate", name), |b| {
            let mut next = 0;
            b.iter(|| {
                next = (next + 1) % n;
                black_box(tiers.decide(limiter, set, visit[next], with_tier))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bench_algorithms, bench_tiers);
criterion_main!(benches);
