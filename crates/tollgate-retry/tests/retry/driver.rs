use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tollgate_retry::backoff::{Backoff, Jitter};
use tollgate_retry::budget::{Cause, RetryBudget};
use tollgate_retry::clock::ManualClock;
use tollgate_retry::retry::{Attempt, Retrier, RetryPolicy};
use tollgate_retry::retry_after::RetryAfterBounds;

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn fixed(base: u64, cap: u64) -> RetryPolicy {
    RetryPolicy::new(Backoff::exponential(ms(base), ms(cap)).jitter(Jitter::None))
}

fn retrier(policy: RetryPolicy, clock: &ManualClock) -> Retrier {
    Retrier::with_clock(policy, Arc::new(clock.clone()), Arc::new(clock.clone())).seed(1)
}

/// An operation that fails `failures` times with `after` as Retry-After, then succeeds; counts
/// its calls.
async fn flaky(
    retrier: &Retrier,
    failures: u32,
    after: Option<Duration>,
) -> (Result<u32, u32>, u32) {
    let calls = AtomicU32::new(0);
    let result = retrier
        .run(
            |attempt| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if attempt <= failures {
                        Err(attempt)
                    } else {
                        Ok(attempt)
                    }
                }
            },
            |result| match result {
                Ok(_) => Attempt::Done,
                Err(_) => Attempt::Retry {
                    after,
                    cause: Cause::Error,
                },
            },
        )
        .await;
    (result, calls.load(Ordering::SeqCst))
}

#[tokio::test]
async fn stops_at_max_attempts_and_returns_the_last_error() {
    let clock = ManualClock::new();
    let (result, calls) = flaky(
        &retrier(fixed(100, 10_000).max_attempts(3), &clock),
        10,
        None,
    )
    .await;
    assert_eq!((result, calls), (Err(3), 3));
    assert_eq!(
        clock.elapsed(),
        ms(100 + 200),
        "no sleep after the last attempt"
    );
}

#[tokio::test]
async fn final_errors_are_not_retried() {
    let clock = ManualClock::new();
    let r = retrier(fixed(100, 1_000).max_attempts(5), &clock);
    let result: Result<(), u16> = r.run(|_| async { Err(422) }, |_| Attempt::Done).await;
    assert_eq!(result, Err(422));
    assert_eq!(clock.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn retry_after_takes_precedence_and_is_clamped() {
    let clock = ManualClock::new();
    let policy = fixed(100, 1_000)
        .max_attempts(3)
        .retry_after(RetryAfterBounds::new(ms(0), ms(5_000)));
    let (result, _) = flaky(&retrier(policy, &clock), 2, Some(ms(60_000))).await;
    assert_eq!(result, Ok(3));
    assert_eq!(
        clock.elapsed(),
        ms(10_000),
        "two waits of Retry-After clamped to 5 s"
    );

    let clock = ManualClock::new();
    let ignoring = fixed(100, 1_000).max_attempts(3).ignore_retry_after();
    let (result, _) = flaky(&retrier(ignoring, &clock), 2, Some(ms(60_000))).await;
    assert_eq!(result, Ok(3));
    assert_eq!(clock.elapsed(), ms(300), "the backoff, not Retry-After");
}

#[tokio::test]
async fn max_elapsed_stops_before_sleeping_past_it() {
    let clock = ManualClock::new();
    let policy = fixed(1_000, 60_000)
        .max_attempts(100)
        .max_elapsed(ms(10_000));
    let (result, calls) = flaky(&retrier(policy, &clock), 100, None).await;
    // Waits 1 + 2 + 4 = 7 s; the next (8 s) would end at 15 s > 10 s.
    assert_eq!((result, calls), (Err(4), 4));
    assert_eq!(clock.elapsed(), ms(7_000));
}

#[tokio::test]
async fn a_shared_budget_stops_retry_storms() {
    let clock = ManualClock::new();
    // 12 tokens: two retries at cost 5, then no more, across calls.
    let budget = RetryBudget::quota(12, 5, 10, 1);
    let policy = fixed(10, 100).max_attempts(10).budget(budget.clone());
    let r = retrier(policy, &clock);
    let (first, calls) = flaky(&r, 100, None).await;
    assert_eq!(
        (first, calls),
        (Err(3), 3),
        "two retries paid for, the third refused"
    );
    let (second, calls) = flaky(&r, 100, None).await;
    assert_eq!(
        (second, calls),
        (Err(1), 1),
        "the bucket is empty for everyone"
    );
    let (ok, _) = flaky(&r, 0, None).await;
    assert_eq!(ok, Ok(1));
    assert_eq!(
        budget.available_milli(),
        3_000,
        "2 left + 1 refunded by a first-time success"
    );
}

#[tokio::test(start_paused = true)]
async fn the_shorthand_sleeps_with_tokio() {
    let started = tokio::time::Instant::now();
    let result: Result<u32, u32> = tollgate_retry::retry::retry(
        fixed(1_000, 1_000).max_attempts(2),
        |attempt| async move { if attempt == 1 { Err(1) } else { Ok(2) } },
        |r| {
            if r.is_err() {
                Attempt::retry()
            } else {
                Attempt::Done
            }
        },
    )
    .await;
    assert_eq!(result, Ok(2));
    assert_eq!(started.elapsed(), ms(1_000));
}

#[tokio::test(start_paused = true)]
async fn real_sleeper_under_paused_tokio_time() {
    let policy = fixed(250, 1_000).max_attempts(3);
    let r = Retrier::new(policy).seed(3);
    let started = tokio::time::Instant::now();
    let (result, calls) = flaky(&r, 2, None).await;
    assert_eq!((result, calls), (Ok(3), 3));
    assert_eq!(started.elapsed(), ms(250 + 500));
}

#[tokio::test]
async fn notify_hears_each_retry_before_its_wait() {
    let clock = ManualClock::new();
    let heard = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let log = Arc::clone(&heard);
    let r = retrier(fixed(100, 10_000).max_attempts(5), &clock).notify(move |retrying| {
        log.lock()
            .push((retrying.attempt, retrying.cause, retrying.delay));
    });
    let (result, calls) = flaky(&r, 2, None).await;
    assert_eq!((result, calls), (Ok(3), 3));
    assert_eq!(
        *heard.lock(),
        [(1, Cause::Error, ms(100)), (2, Cause::Error, ms(200))]
    );
}

#[tokio::test]
async fn run_observed_hands_over_each_failure_and_counts_attempts() {
    let clock = ManualClock::new();
    let r = retrier(fixed(100, 10_000).max_attempts(5), &clock);
    let mut failures = Vec::new();
    let finished = r
        .run_observed(
            |attempt| async move {
                if attempt < 3 {
                    Err(format!("503 on attempt {attempt}"))
                } else {
                    Ok(attempt)
                }
            },
            |result| match result {
                Err(_) => Attempt::retry(),
                Ok(_) => Attempt::Done,
            },
            |retrying, result| failures.push((retrying.attempt, retrying.delay, result.clone())),
        )
        .await;
    assert_eq!(finished.result, Ok(3));
    assert_eq!(finished.attempts, 3);
    assert_eq!(
        failures,
        [
            (1, ms(100), Err("503 on attempt 1".to_owned())),
            (2, ms(200), Err("503 on attempt 2".to_owned())),
        ]
    );

    // A final failure is returned with the attempts it took, and not "observed" as a retry.
    let finished = r
        .run_observed(
            |_| async { Err::<(), _>("401") },
            |_| Attempt::Done,
            |_, _| panic!("nothing is retried"),
        )
        .await;
    assert_eq!((finished.result, finished.attempts), (Err("401"), 1));
}
