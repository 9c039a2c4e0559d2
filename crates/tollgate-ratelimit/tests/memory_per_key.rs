//! Memory per tracked key of the memory limiter, measured: the process's resident memory
//! before and after one million keys are tracked (so the allocator's own overhead counts), for
//! a sliding-window and a GCRA policy, each measured in a process of its own so no other test
//! (and neither measurement) allocates meanwhile.

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

const KEYS: usize = 1_000_000;

/// Set in the child process that measures one algorithm.
const MEASURE: &str = "TOLLGATE_MEASURE_BYTES_PER_KEY";

/// Measures the algorithm `MEASURE` names and prints the figure; does nothing in the parent run.
#[test]
fn measure_one_algorithm() {
    let algorithm = match std::env::var(MEASURE).as_deref() {
        Ok("window") => Algorithm::sliding_window(100, Duration::from_secs(60)),
        Ok("gcra") => Algorithm::token_bucket(100, Duration::from_secs(60), 10),
        _ => return,
    };
    if let Some(bytes) = bytes_per_key(algorithm, KEYS) {
        println!("bytes per key: {bytes:.1}");
    }
}

/// This test binary run again for one algorithm, so neither measurement reuses memory the
/// other freed; `None` without `/proc/self/statm`.
fn measured_in_own_process(algorithm: &str) -> Option<f64> {
    if !std::path::Path::new("/proc/self/statm").exists() {
        return None;
    }
    let output = std::process::Command::new(std::env::current_exe().ok()?)
        .args([
            "--exact",
            "measure_one_algorithm",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(MEASURE, algorithm)
        .output()
        .expect("the test binary runs again");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // libtest may print the test's name on the same line, before what the test printed.
    let figure = stdout
        .lines()
        .find_map(|l| l.split_once("bytes per key: "))
        .map(|(_, figure)| figure.trim())
        .unwrap_or_else(|| panic!("no figure in {stdout}"));
    Some(figure.parse().expect("a number"))
}

#[test]
fn bytes_per_tracked_key_at_one_million_keys() {
    let (Some(window), Some(gcra)) = (
        measured_in_own_process("window"),
        measured_in_own_process("gcra"),
    ) else {
        eprintln!("bytes per key not measured: no /proc/self/statm (Linux only)");
        return;
    };
    eprintln!(
        "memory limiter at {KEYS} keys: {window:.0} bytes per sliding-window key, {gcra:.0} bytes per GCRA key (resident memory)"
    );
    // Measured at about 73 and 56 bytes (docs/performance.md): both live in compact tables of
    // 32- and 24-byte slots. A regression past 120 for a window key or 100 for a GCRA key fails.
    assert!(window < 120.0, "{window:.0} bytes per sliding-window key");
    assert!(gcra < 100.0, "{gcra:.0} bytes per GCRA key");
}
