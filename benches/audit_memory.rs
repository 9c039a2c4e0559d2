//! The in-memory audit log's `record` once it is full, against the same log trimming a user's
//! own trail (no search for the longest), with the server's default bounds (100 000 events,
//! 10 000 per user).
//!
//! Run: `cargo bench --bench audit_memory`. Contenders, all recording one event per iteration
//! for users in turn:
//! - `own_trail`: every user at their own bound, so each event drops that user's oldest;
//! - `full/100_users`, `full/10000_users`: the log at its total bound, so each event drops the
//!   oldest event of the longest trail.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tollgate_audit::{Action, AuditEvent, AuditSink, MemoryAuditLog, Outcome};

const CAPACITY: usize = 100_000;
const PER_USER: usize = 10_000;

fn record(log: &MemoryAuditLog, user: &str) {
    let future = log.record(AuditEvent::new(user, Action::RATE_LIMITED, Outcome::Denied));
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(result) => result.expect("recorded"),
        std::task::Poll::Pending => unreachable!("the memory log never waits"),
    }
}

/// A log filled to its bounds by `users` users in turn.
fn filled(capacity: usize, users: &[String]) -> MemoryAuditLog {
    let log = MemoryAuditLog::with_limits(capacity, PER_USER);
    for i in 0..capacity.max(PER_USER * users.len()).min(4 * CAPACITY) {
        record(&log, &users[i % users.len()]);
    }
    log
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("audit/memory/record");
    group.throughput(Throughput::Elements(1));
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let names = |n: usize| -> Vec<String> { (0..n).map(|i| format!("user-{i}")).collect() };
    let cases = [
        ("own_trail", names(10), usize::MAX),
        ("full/100_users", names(100), CAPACITY),
        ("full/10000_users", names(10_000), CAPACITY),
    ];
    for (name, users, capacity) in &cases {
        let log = filled(*capacity, users);
        group.bench_function(BenchmarkId::new("tollgate", name), |b| {
            let mut i = 0;
            b.iter(|| {
                record(&log, &users[i % users.len()]);
                i += 1;
            });
            black_box(log.len());
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
