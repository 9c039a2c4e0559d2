//! Memory per tracked key of the memory limiter, measured: the process's resident memory
//! before and after one million keys are tracked (so the allocator's own overhead counts), for
//! a sliding-window and a GCRA policy. Its own test binary, so no other test allocates
//! meanwhile.

use std::sync::Arc;
use std::time::Duration;

use tollgate_ratelimit::{Algorithm, MemoryLimiter, Policy, PolicyKey, Scope};

/// Resident memory of this process, in bytes (`/proc/self/statm`, Linux).
fn resident() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Bytes per key with `keys` users tracked under `algorithm`.
fn bytes_per_key(algorithm: Algorithm, keys: usize) -> Option<f64> {
    let policy = Arc::new(Policy::new("per-user", Scope::User, algorithm).expect("a policy"));
    // The keys are made first: what is measured is the limiter's state, not the callers'.
    let subjects: Vec<String> = (0..keys).map(|n| format!("user-{n:07}")).collect();
    let before = resident()?;
    let limiter = MemoryLimiter::builder().max_keys(keys * 2).build();
    for subject in &subjects {
        let key = [PolicyKey::new(Arc::clone(&policy), subject)];
        assert!(limiter.check_now(&key, 1).expect("a decision").is_allowed());
    }
    let after = resident()?;
    drop(limiter);
    Some((after.saturating_sub(before)) as f64 / keys as f64)
}

#[test]
fn bytes_per_tracked_key_at_one_million_keys() {
    let keys = 1_000_000;
    let window = Algorithm::sliding_window(100, Duration::from_secs(60));
    let gcra = Algorithm::token_bucket(100, Duration::from_secs(60), 10);
    let (Some(window), Some(gcra)) = (bytes_per_key(window, keys), bytes_per_key(gcra, keys))
    else {
        eprintln!("bytes per key not measured: no /proc/self/statm (Linux only)");
        return;
    };
    eprintln!(
        "memory limiter at {keys} keys: {window:.0} bytes per sliding-window key, {gcra:.0} bytes per GCRA key (resident memory)"
    );
    // Measured at 137 and 154 bytes (docs/performance.md); a regression past 200 fails.
    assert!(
        window < 200.0 && gcra < 200.0,
        "{window:.0} / {gcra:.0} bytes per key"
    );
}
