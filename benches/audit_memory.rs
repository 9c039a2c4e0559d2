//! The in-memory audit log's `record` once it is full, against the same log trimming a user's
//! own trail (no search for the longest), with the server's default bounds (100 000 events,
//! 10 000 per user).
//!
//! Run: `cargo bench --bench audit_memory`. Contenders, all recording one event per iteration
//! for users in turn:
//! - `own_trail`: every user at their own bound, so each event drops that user's oldest;
//! - `full/100_users`, `full/10000_users`: the log at its total bound, so each event drops the
//!   oldest event of the longest trail.

mod support;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tollgate_audit::{Action, AuditEvent, AuditSink, MemoryAuditLog, Outcome};

const CAPACITY: usize = 100_000;
const PER_USER: usize = 10_000;

fn record(log: &MemoryAuditLog, user: &str) {
    let event = AuditEvent::new(user, Action::RATE_LIMITED, Outcome::Denied);
    support::poll_ready(log.record(event)).expect("recorded");
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
    let mut group = support::per_element_group(c, "audit/memory/record".to_owned());
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
