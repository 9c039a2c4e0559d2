//! The AWS Architecture Blog's "Exponential Backoff and Jitter" experiment, reproduced: 100
//! clients each need one write to a row guarded by optimistic concurrency, all starting at once.
//! A call reads the row's version when it starts and commits 1 ms later; it succeeds only if no
//! other commit happened in between, and otherwise backs off and tries again (no attempt limit).
//! The event simulation is deterministic (seeded jitter, ties broken by client number), so the
//! table in the crate docs is asserted exactly here.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::time::Duration;

use tollgate_retry::backoff::{Backoff, Delays, Jitter};

const CLIENTS: usize = 100;
const LATENCY_US: u64 = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// (the commit sorts before a start at the same instant: the row changes, then is read)
    Commit,
    Start,
}

/// Returns (total calls, µs until the last client succeeded).
fn simulate(jitter: Jitter) -> (u64, u64) {
    let backoff =
        Backoff::exponential(Duration::from_millis(1), Duration::from_secs(1)).jitter(jitter);
    let mut delays: Vec<Delays> = (0..CLIENTS).map(|i| backoff.delays(i as u64)).collect();
    let mut read_version = vec![0u64; CLIENTS];
    let mut version = 0u64;
    let mut calls = 0u64;
    let mut finished = 0;
    let mut events = BinaryHeap::new();
    for client in 0..CLIENTS {
        events.push(Reverse((0u64, Event::Start, client)));
    }
    while let Some(Reverse((now, event, client))) = events.pop() {
        match event {
            Event::Start => {
                calls += 1;
                read_version[client] = version;
                events.push(Reverse((now + LATENCY_US, Event::Commit, client)));
            }
            Event::Commit if read_version[client] == version => {
                version += 1;
                finished += 1;
                if finished == CLIENTS {
                    return (calls, now);
                }
            }
            Event::Commit => {
                let delay = delays[client].next().unwrap_or(Duration::ZERO);
                let wait = u64::try_from(delay.as_micros()).expect("small");
                events.push(Reverse((now + wait, Event::Start, client)));
            }
        }
    }
    (calls, u64::MAX)
}

#[test]
fn jitter_cuts_total_work_under_contention() {
    let mut results = Vec::new();
    for jitter in [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ] {
        let (calls, micros) = simulate(jitter);
        let _ = writeln!(
            std::io::stderr(),
            "simulation: {jitter:?}: {calls} calls, all done after {:.1} ms",
            micros as f64 / 1000.0
        );
        results.push((jitter, calls, micros));
    }
    let none = results[0].1;
    for &(jitter, calls, _) in &results[1..] {
        assert!(
            calls * 2 < none,
            "{jitter:?} made {calls} calls, no jitter {none}"
        );
    }
    // The table in the crate docs (src/lib.rs), exactly.
    let table: Vec<(u64, u64)> = results.iter().map(|&(_, c, us)| (c, us / 1000)).collect();
    assert_eq!(
        table, EXPECTED,
        "update the crate docs' table if the simulation changed"
    );
}

/// (calls, completion in whole ms) for none, full, equal, decorrelated.
const EXPECTED: [(u64, u64); 4] = [(5050, 90123), (745, 376), (757, 849), (777, 292)];
