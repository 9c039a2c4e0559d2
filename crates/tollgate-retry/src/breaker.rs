//! A circuit breaker: closed → open → half-open → closed, on failure rate and slow-call rate.
//!
//! - **Closed**: calls go through; outcomes are recorded in a sliding window (the last N calls, or
//!   the last T of time in ten buckets). Once the window holds at least `minimum_calls` and the
//!   failure rate or the slow-call rate reaches its threshold, the breaker opens.
//! - **Open**: calls are refused with [`Error::CircuitOpen`] and the time left, until
//!   `wait_in_open` has passed.
//! - **Half-open**: `permitted_half_open_calls` probes go through (more are refused); when all have
//!   finished, the breaker closes if their rates are below the thresholds and opens again if not.
//!
//! Outcomes of calls that started before a transition are ignored, so a slow call from before the
//! breaker opened cannot close it. Transitions are reported to listeners after the state lock is
//! released.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tollgate_retry::breaker::{BreakerConfig, CircuitBreaker, State, Window};
//! use tollgate_retry::clock::ManualClock;
//!
//! let clock = ManualClock::new();
//! let config = BreakerConfig::default()
//!     .window(Window::Count(4))
//!     .minimum_calls(4)
//!     .failure_rate_threshold(50)
//!     .wait_in_open(Duration::from_secs(10))
//!     .permitted_half_open_calls(1);
//! let breaker = CircuitBreaker::with_clock(config, Arc::new(clock.clone()));
//! for failed in [false, true, false, true] {
//!     let permit = breaker.try_acquire()?;
//!     if failed { permit.failure() } else { permit.success() }
//! }
//! assert_eq!(breaker.state(), State::Open); // 2 of 4 failed: 50 %
//! let refused = breaker.try_acquire().unwrap_err();
//! assert!(refused.is_circuit_open());
//!
//! clock.advance(Duration::from_secs(10));
//! breaker.try_acquire()?.success();            // the probe succeeds
//! assert_eq!(breaker.state(), State::Closed);
//! # Ok::<(), tollgate_retry::Error>(())
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::Error;
use crate::clock::{Clock, SystemClock, Timestamp};

/// Which calls the closed-state rates are computed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The last N calls.
    Count(u32),
    /// The calls of the last duration, in ten buckets (so 90–100 % of it is covered).
    Time(Duration),
}

/// Circuit breaker settings (the defaults are resilience4j's, with a shorter open wait): start
/// from the default and change what you need
/// (`BreakerConfig::default().minimum_calls(20).wait_in_open(Duration::from_secs(10))`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// The sliding window of the closed state.
    pub window: Window,
    /// Open when at least this percentage of calls failed (1–100).
    pub failure_rate_threshold: u8,
    /// Open when at least this percentage of calls were slow (1–100).
    pub slow_call_rate_threshold: u8,
    /// A call taking at least this long is slow.
    pub slow_call_duration: Duration,
    /// No decision before the window holds this many calls.
    pub minimum_calls: u32,
    /// How long the breaker stays open before probing.
    pub wait_in_open: Duration,
    /// How many probe calls half-open lets through.
    pub permitted_half_open_calls: u32,
}

impl BreakerConfig {
    /// The sliding window of the closed state.
    pub fn window(mut self, window: Window) -> Self {
        self.window = window;
        self
    }

    /// Open when at least this percentage of calls failed (1–100).
    pub fn failure_rate_threshold(mut self, percent: u8) -> Self {
        self.failure_rate_threshold = percent;
        self
    }

    /// Open when at least this percentage of calls were slow (1–100).
    pub fn slow_call_rate_threshold(mut self, percent: u8) -> Self {
        self.slow_call_rate_threshold = percent;
        self
    }

    /// A call taking at least this long is slow.
    pub fn slow_call_duration(mut self, duration: Duration) -> Self {
        self.slow_call_duration = duration;
        self
    }

    /// No decision before the window holds this many calls.
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.minimum_calls = calls;
        self
    }

    /// How long the breaker stays open before probing.
    pub fn wait_in_open(mut self, wait: Duration) -> Self {
        self.wait_in_open = wait;
        self
    }

    /// How many probe calls half-open lets through.
    pub fn permitted_half_open_calls(mut self, calls: u32) -> Self {
        self.permitted_half_open_calls = calls;
        self
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: Window::Count(100),
            failure_rate_threshold: 50,
            slow_call_rate_threshold: 100,
            slow_call_duration: Duration::from_secs(60),
            minimum_calls: 100,
            wait_in_open: Duration::from_secs(30),
            permitted_half_open_calls: 10,
        }
    }
}

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls go through and are counted.
    Closed,
    /// Calls are refused.
    Open,
    /// A few probe calls go through.
    HalfOpen,
}

impl State {
    /// `closed`, `open` or `half_open`, as telemetry names the state.
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// A state change, as given to listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// When, by the breaker's clock.
    pub at: Timestamp,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    calls: u64,
    failures: u64,
    slow: u64,
}

impl Counts {
    fn add(&mut self, failed: bool, slow: bool) {
        self.calls += 1;
        self.failures += u64::from(failed);
        self.slow += u64::from(slow);
    }

    fn remove(&mut self, other: Counts) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
    }

    fn trips(&self, config: &BreakerConfig) -> bool {
        self.failures * 100 >= u64::from(config.failure_rate_threshold) * self.calls
            || self.slow * 100 >= u64::from(config.slow_call_rate_threshold) * self.calls
    }
}

#[derive(Debug)]
enum Outcomes {
    Count {
        size: usize,
        ring: VecDeque<Counts>,
        total: Counts,
    },
    Time {
        origin: Timestamp,
        width: Duration,
        buckets: VecDeque<(u64, Counts)>,
        total: Counts,
    },
}

impl Outcomes {
    fn new(window: Window, origin: Timestamp) -> Self {
        match window {
            Window::Count(n) => Outcomes::Count {
                size: usize::try_from(n.max(1)).unwrap_or(usize::MAX),
                ring: VecDeque::new(),
                total: Counts::default(),
            },
            Window::Time(span) => Outcomes::Time {
                origin,
                width: (span / 10).max(Duration::from_millis(1)),
                buckets: VecDeque::new(),
                total: Counts::default(),
            },
        }
    }

    fn record(&mut self, failed: bool, slow: bool, now: Timestamp) -> Counts {
        self.expire(now);
        let mut one = Counts::default();
        one.add(failed, slow);
        match self {
            Outcomes::Count { size, ring, total } => {
                ring.push_back(one);
                total.add(failed, slow);
                if ring.len() > *size
                    && let Some(old) = ring.pop_front()
                {
                    total.remove(old);
                }
                *total
            }
            Outcomes::Time {
                origin,
                width,
                buckets,
                total,
            } => {
                let index = bucket_index(*origin, *width, now);
                match buckets.back_mut() {
                    Some((i, counts)) if *i == index => counts.add(failed, slow),
                    _ => buckets.push_back((index, one)),
                }
                total.add(failed, slow);
                *total
            }
        }
    }

    /// Drops time buckets that left the window.
    fn expire(&mut self, now: Timestamp) {
        match self {
            Outcomes::Count { .. } => {}
            Outcomes::Time {
                origin,
                width,
                buckets,
                total,
            } => {
                let current = bucket_index(*origin, *width, now);
                while let Some(&(index, counts)) = buckets.front() {
                    if index + 10 > current {
                        break;
                    }
                    total.remove(counts);
                    buckets.pop_front();
                }
            }
        }
    }
}

fn bucket_index(origin: Timestamp, width: Duration, now: Timestamp) -> u64 {
    let elapsed = now.saturating_duration_since(origin).as_nanos();
    u64::try_from(elapsed / width.as_nanos().max(1)).unwrap_or(u64::MAX)
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Bumped on every transition; a permit from another generation records nothing.
    generation: u64,
    opened_at: Timestamp,
    outcomes: Outcomes,
    probes_issued: u32,
    probes: Counts,
}

type Listener = Box<dyn Fn(&Transition) + Send + Sync>;

/// A circuit breaker. Clones share state.
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Mutex<Inner>>,
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    listeners: Arc<Mutex<Vec<Listener>>>,
    name: Arc<str>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Permission for one call; report how it went with [`success`](Permit::success),
/// [`failure`](Permit::failure) or [`ignore`](Permit::ignore). Dropped unreported — the call
/// was cancelled by a timeout, or its caller went away — it records a failure: a dependency
/// that hangs is what a breaker is for.
#[must_use = "report the call's outcome with success(), failure() or ignore()"]
#[derive(Debug)]
pub struct Permit {
    breaker: CircuitBreaker,
    generation: u64,
    started: Timestamp,
    probe: bool,
    reported: bool,
}

impl Permit {
    /// The call succeeded (it may still count as slow).
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.record(&self, false);
    }

    /// The call failed.
    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.record(&self, true);
    }

    /// The call says nothing about the dependency (it failed because of the request itself,
    /// or was never made): nothing is recorded, and a half-open breaker gets its probe back.
    pub fn ignore(mut self) {
        self.reported = true;
        if self.probe {
            let mut inner = self.breaker.inner.lock();
            if inner.generation == self.generation && inner.state == State::HalfOpen {
                inner.probes_issued -= 1;
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.reported {
            self.reported = true;
            self.breaker.record(self, true);
        }
    }
}

impl CircuitBreaker {
    /// A breaker on the system clock.
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreaker::with_clock(config, Arc::new(SystemClock::new()))
    }

    /// A breaker on `clock`.
    pub fn with_clock(config: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        CircuitBreaker {
            inner: Arc::new(Mutex::new(Inner {
                state: State::Closed,
                generation: 0,
                opened_at: now,
                outcomes: Outcomes::new(config.window, now),
                probes_issued: 0,
                probes: Counts::default(),
            })),
            config,
            clock,
            listeners: Arc::new(Mutex::new(Vec::new())),
            name: Arc::from("default"),
        }
    }

    /// Names the breaker in telemetry (features `tracing` and `metrics`; `default` unless
    /// named): the dependency it guards, such as `processor` or a host.
    pub fn named(mut self, name: &str) -> Self {
        self.name = Arc::from(name);
        crate::telemetry::breaker_created(name);
        self
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Calls `listener` on every state change.
    pub fn on_transition(&self, listener: impl Fn(&Transition) + Send + Sync + 'static) {
        self.listeners.lock().push(Box::new(listener));
    }

    /// The current state (an open breaker whose wait is over still reads `Open` until the next
    /// call asks).
    pub fn state(&self) -> State {
        self.inner.lock().state
    }

    /// Runs `call` if the breaker lets it through, and records how it went: a failure when
    /// `failed` says so of its result, a success otherwise — and a failure when the call is
    /// dropped before it finishes (its deadline passed, or its caller went away), since a
    /// dependency that hangs is the failure a breaker exists for. `Err` when the breaker is open.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use tollgate_retry::breaker::{BreakerConfig, CircuitBreaker};
    ///
    /// let breaker = CircuitBreaker::new(BreakerConfig::default());
    /// let paid = breaker.call(async { Ok::<_, ()>("charged") }, Result::is_err).await;
    /// assert_eq!(paid.unwrap(), Ok("charged"));
    /// // A call cut off by a timeout counts as a failure.
    /// let slow = breaker.call(std::future::pending::<Result<(), ()>>(), Result::is_err);
    /// assert!(tokio::time::timeout(Duration::from_millis(1), slow).await.is_err());
    /// # });
    /// ```
    pub async fn call<T, E>(
        &self,
        call: impl Future<Output = Result<T, E>>,
        failed: impl FnOnce(&Result<T, E>) -> bool,
    ) -> Result<Result<T, E>, Error> {
        // Dropped with this future before the call finished, the permit records a failure.
        let permit = self.try_acquire()?;
        let result = call.await;
        if failed(&result) {
            permit.failure();
        } else {
            permit.success();
        }
        Ok(result)
    }

    /// Asks to make a call.
    pub fn try_acquire(&self) -> Result<Permit, Error> {
        let now = self.clock.now();
        let mut transition = None;
        let result = {
            let mut inner = self.inner.lock();
            if inner.state == State::Open {
                let reopen_at = inner.opened_at + self.config.wait_in_open;
                if now < reopen_at {
                    return Err(Error::CircuitOpen {
                        retry_after: reopen_at - now,
                    });
                }
                transition = Some(self.enter(&mut inner, State::HalfOpen, now));
            }
            match inner.state {
                State::HalfOpen if inner.probes_issued >= self.config.permitted_half_open_calls => {
                    Err(Error::CircuitOpen {
                        retry_after: Duration::ZERO,
                    })
                }
                state => {
                    let probe = state == State::HalfOpen;
                    inner.probes_issued += u32::from(probe);
                    Ok(Permit {
                        breaker: self.clone(),
                        generation: inner.generation,
                        started: now,
                        probe,
                        reported: false,
                    })
                }
            }
        };
        self.notify(transition);
        result
    }

    fn record(&self, permit: &Permit, failed: bool) {
        let now = self.clock.now();
        let slow = now.saturating_duration_since(permit.started) >= self.config.slow_call_duration;
        let transition = {
            let mut inner = self.inner.lock();
            if inner.generation != permit.generation {
                return;
            }
            match inner.state {
                State::Closed => {
                    let counts = inner.outcomes.record(failed, slow, now);
                    let enough = counts.calls >= u64::from(self.config.minimum_calls.max(1));
                    (enough && counts.trips(&self.config))
                        .then(|| self.enter(&mut inner, State::Open, now))
                }
                State::HalfOpen => {
                    inner.probes.add(failed, slow);
                    if inner.probes.calls >= u64::from(self.config.permitted_half_open_calls) {
                        let next = if inner.probes.trips(&self.config) {
                            State::Open
                        } else {
                            State::Closed
                        };
                        Some(self.enter(&mut inner, next, now))
                    } else {
                        None
                    }
                }
                State::Open => None,
            }
        };
        self.notify(transition);
    }

    fn enter(&self, inner: &mut Inner, to: State, now: Timestamp) -> Transition {
        let from = inner.state;
        inner.state = to;
        inner.generation += 1;
        inner.probes_issued = 0;
        inner.probes = Counts::default();
        match to {
            State::Open => inner.opened_at = now,
            State::Closed => inner.outcomes = Outcomes::new(self.config.window, now),
            State::HalfOpen => {}
        }
        Transition { from, to, at: now }
    }

    fn notify(&self, transition: Option<Transition>) {
        if let Some(transition) = transition {
            let (from, to) = (transition.from.name(), transition.to.name());
            crate::telemetry::breaker_transition(&self.name, from, to);
            for listener in self.listeners.lock().iter() {
                listener(&transition);
            }
        }
    }
}
