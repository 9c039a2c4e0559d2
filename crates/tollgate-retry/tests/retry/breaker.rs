use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use tollgate_retry::Error;
use tollgate_retry::breaker::{BreakerConfig, CircuitBreaker, State, Window};
use tollgate_retry::clock::ManualClock;

const WAIT_MS: u64 = 100;
const SLOW_MS: u64 = 50;

#[derive(Clone, Copy, Debug)]
enum Op {
    /// Acquire, run (slowly or not), report.
    Call {
        failed: bool,
        slow: bool,
    },
    /// Acquire and report nothing about the dependency (`Permit::ignore`).
    Abandon,
    Advance(u64),
}

/// The breaker's rules, written as plainly as possible (count-based window).
struct Model {
    config: BreakerConfig,
    size: usize,
    state: State,
    opened_at: u64,
    window: VecDeque<(bool, bool)>,
    probes_issued: u32,
    probes: Vec<(bool, bool)>,
}

impl Model {
    fn trips(&self, outcomes: &[(bool, bool)]) -> bool {
        let n = outcomes.len() as u64;
        let failed = outcomes.iter().filter(|o| o.0).count() as u64;
        let slow = outcomes.iter().filter(|o| o.1).count() as u64;
        failed * 100 >= u64::from(self.config.failure_rate_threshold) * n
            || slow * 100 >= u64::from(self.config.slow_call_rate_threshold) * n
    }

    fn enter(&mut self, to: State, now: u64) {
        self.state = to;
        self.probes_issued = 0;
        self.probes.clear();
        match to {
            State::Open => self.opened_at = now,
            State::Closed => self.window.clear(),
            State::HalfOpen => {}
        }
    }

    /// `Ok(())` or `Err(retry_after_ms)`.
    fn acquire(&mut self, now: u64) -> Result<(), u64> {
        if self.state == State::Open {
            if now < self.opened_at + WAIT_MS {
                return Err(self.opened_at + WAIT_MS - now);
            }
            self.enter(State::HalfOpen, now);
        }
        if self.state == State::HalfOpen {
            if self.probes_issued >= self.config.permitted_half_open_calls {
                return Err(0);
            }
            self.probes_issued += 1;
        }
        Ok(())
    }

    fn report(&mut self, now: u64, failed: bool, slow: bool) {
        match self.state {
            State::Closed => {
                self.window.push_back((failed, slow));
                if self.window.len() > self.size {
                    self.window.pop_front();
                }
                let outcomes: Vec<_> = self.window.iter().copied().collect();
                if outcomes.len() as u64 >= u64::from(self.config.minimum_calls)
                    && self.trips(&outcomes)
                {
                    self.enter(State::Open, now);
                }
            }
            State::HalfOpen => {
                self.probes.push((failed, slow));
                if self.probes.len() as u32 >= self.config.permitted_half_open_calls {
                    let next = if self.trips(&self.probes.clone()) {
                        State::Open
                    } else {
                        State::Closed
                    };
                    self.enter(next, now);
                }
            }
            State::Open => {}
        }
    }

    fn abandon(&mut self) {
        if self.state == State::HalfOpen {
            self.probes_issued -= 1;
        }
    }
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            6 => (any::<bool>(), prop::bool::weighted(0.2)).prop_map(|(failed, slow)| Op::Call { failed, slow }),
            1 => Just(Op::Abandon),
            2 => (0u64..150).prop_map(Op::Advance),
        ],
        1..200,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn breaker_matches_the_reference_model(
        size in 1u32..8,
        minimum_calls in 1u32..8,
        failure_rate_threshold in 1u8..=100,
        slow_call_rate_threshold in 1u8..=100,
        permitted in 1u32..4,
        ops in ops(),
    ) {
        let config = BreakerConfig::default()
            .window(Window::Count(size))
            .failure_rate_threshold(failure_rate_threshold)
            .slow_call_rate_threshold(slow_call_rate_threshold)
            .slow_call_duration(Duration::from_millis(SLOW_MS))
            .minimum_calls(minimum_calls)
            .wait_in_open(Duration::from_millis(WAIT_MS))
            .permitted_half_open_calls(permitted);
        let clock = ManualClock::new();
        let breaker = CircuitBreaker::with_clock(config, Arc::new(clock.clone()));
        let mut model = Model {
            config,
            size: size as usize,
            state: State::Closed,
            opened_at: 0,
            window: VecDeque::new(),
            probes_issued: 0,
            probes: Vec::new(),
        };
        let now = |clock: &ManualClock| u64::try_from(clock.elapsed().as_millis()).expect("small");
        for op in ops {
            match op {
                Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
                Op::Call { failed, slow } => {
                    let expected = model.acquire(now(&clock));
                    match breaker.try_acquire() {
                        Ok(permit) => {
                            prop_assert!(expected.is_ok(), "breaker admitted, model refused: {:?}", expected);
                            if slow {
                                clock.advance(Duration::from_millis(SLOW_MS));
                            }
                            model.report(now(&clock), failed, slow);
                            if failed { permit.failure() } else { permit.success() }
                        }
                        Err(Error::CircuitOpen { retry_after }) => {
                            let wait = expected.expect_err("model admitted, breaker refused");
                            prop_assert_eq!(retry_after, Duration::from_millis(wait));
                        }
                        Err(other) => prop_assert!(false, "unexpected error {}", other),
                    }
                }
                Op::Abandon => {
                    let expected = model.acquire(now(&clock));
                    let got = breaker.try_acquire();
                    prop_assert_eq!(got.is_ok(), expected.is_ok());
                    if let Ok(permit) = got {
                        permit.ignore();
                        model.abandon();
                    }
                }
            }
            prop_assert_eq!(breaker.state(), model.state);
        }
    }
}

#[test]
fn stale_outcomes_are_ignored_and_listeners_hear_every_transition() {
    let clock = ManualClock::new();
    let config = BreakerConfig::default()
        .window(Window::Count(2))
        .minimum_calls(2)
        .failure_rate_threshold(100)
        .wait_in_open(Duration::from_secs(1))
        .permitted_half_open_calls(1);
    let breaker = CircuitBreaker::with_clock(config, Arc::new(clock.clone()));
    let heard = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&heard);
    breaker.on_transition(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let straggler = breaker.try_acquire().expect("closed");
    breaker.try_acquire().expect("closed").failure();
    breaker.try_acquire().expect("closed").failure();
    assert_eq!(breaker.state(), State::Open);
    // A success from before the breaker opened must not count as a probe.
    straggler.success();
    clock.advance(Duration::from_secs(1));
    let probe = breaker.try_acquire().expect("half-open probe");
    assert!(
        breaker
            .try_acquire()
            .expect_err("one probe only")
            .is_circuit_open()
    );
    probe.failure();
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(
        heard.load(Ordering::SeqCst),
        3,
        "closed→open, open→half-open, half-open→open"
    );
}

#[test]
fn time_window_forgets_old_failures() {
    let clock = ManualClock::new();
    let config = BreakerConfig::default()
        .window(Window::Time(Duration::from_secs(10)))
        .minimum_calls(3)
        .failure_rate_threshold(50);
    let breaker = CircuitBreaker::with_clock(config, Arc::new(clock.clone()));
    breaker.try_acquire().expect("closed").failure();
    breaker.try_acquire().expect("closed").failure();
    clock.advance(Duration::from_secs(11));
    // The two failures left the window: 1 call, below the minimum.
    breaker.try_acquire().expect("closed").failure();
    assert_eq!(breaker.state(), State::Closed);
    breaker.try_acquire().expect("closed").success();
    breaker.try_acquire().expect("closed").failure();
    assert_eq!(breaker.state(), State::Open, "2 of 3 failed in the window");
}

/// `call` counts what `failed` says, and a call dropped before it finished as a failure: four
/// calls cut off by a timeout open a breaker that needs four calls at 50 %.
#[tokio::test]
async fn call_counts_results_and_cancelled_calls() {
    let clock = ManualClock::new();
    let config = BreakerConfig::default()
        .window(Window::Count(4))
        .minimum_calls(4)
        .failure_rate_threshold(50);
    let breaker = CircuitBreaker::with_clock(config, Arc::new(clock.clone()));
    let ok = breaker
        .call(async { Ok::<u8, u8>(1) }, Result::is_err)
        .await;
    assert_eq!(ok.expect("closed"), Ok(1));
    let declined = breaker.call(async { Err::<u8, u8>(7) }, |_| false).await;
    assert_eq!(
        declined.expect("closed"),
        Err(7),
        "a failure only if `failed` says so"
    );
    for _ in 0..2 {
        let hung = breaker.call(std::future::pending::<Result<u8, u8>>(), Result::is_err);
        let cut_off = tokio::time::timeout(Duration::from_millis(1), hung).await;
        assert!(cut_off.is_err());
    }
    assert_eq!(
        breaker.state(),
        State::Open,
        "two of four calls were cancelled"
    );
    let refused = breaker
        .call(async { Ok::<u8, u8>(1) }, Result::is_err)
        .await;
    assert!(matches!(refused, Err(Error::CircuitOpen { .. })));
}

/// Through the tower layer: a `4xx` is the request's fault, a `5xx` and a call cut off by a
/// timeout are the dependency's; once open, calls fail without reaching it.
#[tokio::test]
async fn the_layer_counts_server_errors_and_cancelled_calls() {
    use tollgate_retry::breaker_layer::{BreakerError, CircuitBreakerLayer};
    use tower::{Layer, ServiceExt, service_fn};

    let clock = ManualClock::new();
    let config = BreakerConfig::default()
        .window(Window::Count(4))
        .minimum_calls(4)
        .failure_rate_threshold(75);
    let breaker = CircuitBreaker::with_clock(config, Arc::new(clock.clone()));
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let dependency = service_fn(move |status: u16| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if status == 0 {
                std::future::pending::<()>().await;
            }
            let response = http::Response::builder()
                .status(status)
                .body(())
                .expect("response");
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let client = CircuitBreakerLayer::http(breaker.clone()).layer(dependency);
    for status in [404, 503, 502] {
        let answer = client.clone().oneshot(status).await.expect("an answer");
        assert_eq!(answer.status().as_u16(), status);
    }
    assert_eq!(
        breaker.state(),
        State::Closed,
        "one success (the 404) of three"
    );
    let hung = tokio::time::timeout(Duration::from_millis(1), client.clone().oneshot(0)).await;
    assert!(hung.is_err());
    assert_eq!(
        breaker.state(),
        State::Open,
        "the cut-off call was the third failure of four"
    );
    let refused = client.clone().oneshot(200).await;
    assert!(matches!(
        refused,
        Err(BreakerError::Open(Error::CircuitOpen { .. }))
    ));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "refused calls never reach the dependency"
    );
}
