//! The arithmetic of each algorithm, as pure functions of `(state, now, quota)`.
//!
//! A backend only supplies an atomic read-compute-write around these functions: the memory
//! backend holds a shard lock, the Redis backend runs the same arithmetic in Lua
//! (`redis/scripts.rs`), and the conformance suite checks that both give identical answers.
//! All quantities are integers: time in microseconds, counts in requests.

pub(crate) mod gcra;
pub(crate) mod sliding_log;
pub(crate) mod sliding_window;
mod status;

pub(crate) use status::Status;

use crate::policy::Quota;

/// A key's state, whichever algorithm it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Window(sliding_window::WindowState),
    /// Boxed: a log is rarer and larger than the others, and the state sits in every table slot.
    Log(Box<sliding_log::LogState>),
    Gcra(gcra::GcraState),
}

impl State {
    /// The state of a key nobody has used.
    #[inline]
    pub(crate) fn fresh(quota: Quota, now: u64) -> Self {
        match quota {
            Quota::SlidingWindow { window, .. } => {
                State::Window(sliding_window::WindowState::fresh(now, window))
            }
            Quota::SlidingLog { .. } => State::Log(Box::default()),
            Quota::Gcra { .. } => State::Gcra(gcra::GcraState::fresh(now)),
        }
    }

    /// Whether this state was written by `quota`'s algorithm (a policy may change between
    /// releases; a mismatched state is discarded rather than misread).
    #[inline]
    pub(crate) fn matches(&self, quota: Quota) -> bool {
        matches!(
            (self, quota),
            (State::Window(_), Quota::SlidingWindow { .. })
                | (State::Log(_), Quota::SlidingLog { .. })
                | (State::Gcra(_), Quota::Gcra { .. })
        )
    }

    /// Brings the state to `now` (rolls windows, drops expired log entries). This never changes
    /// any answer; it only makes the state smaller and the next computation cheaper.
    #[inline]
    pub(crate) fn advance(&mut self, quota: Quota, now: u64) {
        match (self, quota) {
            (State::Window(s), Quota::SlidingWindow { window, .. }) => s.advance(now, window),
            (State::Log(s), Quota::SlidingLog { window, .. }) => s.advance(now, window),
            _ => {}
        }
    }

    /// The whole decision for one key in a single dispatch: advance, ask, consume if admitted
    /// and `consume` is set, and report. Equivalent to calling those steps one by one.
    #[inline]
    pub(crate) fn decide(
        &mut self,
        quota: Quota,
        now: u64,
        cost: u64,
        consume: bool,
    ) -> (Result<(), u64>, Status) {
        match (&mut *self, quota) {
            (
                State::Gcra(s),
                Quota::Gcra {
                    interval,
                    tolerance,
                },
            ) => {
                let verdict = s.admits(now, interval, tolerance, cost);
                if consume && verdict.is_ok() {
                    s.consume(now, interval, cost);
                }
                (verdict, s.status(now, interval, tolerance))
            }
            (State::Window(s), Quota::SlidingWindow { limit, window }) => {
                s.advance(now, window);
                let verdict = s.admits(now, limit, window, cost);
                if consume && verdict.is_ok() {
                    s.consume(cost);
                }
                (verdict, s.status(now, limit, window))
            }
            (State::Log(s), Quota::SlidingLog { limit, window }) => {
                s.advance(now, window);
                let verdict = s.admits(now, limit, window, cost);
                if consume && verdict.is_ok() {
                    s.consume(now, cost);
                }
                (verdict, s.status(now, limit, window))
            }
            _ => {
                *self = State::fresh(quota, now);
                self.decide(quota, now, cost, consume)
            }
        }
    }

    /// Remaining quota and reset time at `now`.
    #[inline]
    pub(crate) fn status(&self, quota: Quota, now: u64) -> Status {
        match (self, quota) {
            (State::Window(s), Quota::SlidingWindow { limit, window }) => {
                s.status(now, limit, window)
            }
            (State::Log(s), Quota::SlidingLog { limit, window }) => s.status(now, limit, window),
            (
                State::Gcra(s),
                Quota::Gcra {
                    interval,
                    tolerance,
                },
            ) => s.status(now, interval, tolerance),
            (_, quota) => State::fresh(quota, now).status(quota, now),
        }
    }

    /// `Ok` if `cost` is admitted at `now`, else `Err(µs to wait)`.
    #[inline]
    pub(crate) fn admits(&self, quota: Quota, now: u64, cost: u64) -> Result<(), u64> {
        match (self, quota) {
            (State::Window(s), Quota::SlidingWindow { limit, window }) => {
                s.admits(now, limit, window, cost)
            }
            (State::Log(s), Quota::SlidingLog { limit, window }) => {
                s.admits(now, limit, window, cost)
            }
            (
                State::Gcra(s),
                Quota::Gcra {
                    interval,
                    tolerance,
                },
            ) => s.admits(now, interval, tolerance, cost),
            (_, quota) => State::fresh(quota, now).admits(quota, now, cost),
        }
    }

    /// Records `cost` admitted at `now`. Call only after [`admits`](Self::admits) said yes.
    #[inline]
    pub(crate) fn consume(&mut self, quota: Quota, now: u64, cost: u64) {
        if !self.matches(quota) {
            *self = State::fresh(quota, now);
        }
        match (self, quota) {
            (State::Window(s), _) => s.consume(cost),
            (State::Log(s), _) => s.consume(now, cost),
            (State::Gcra(s), Quota::Gcra { interval, .. }) => s.consume(now, interval, cost),
            (State::Gcra(_), _) => {}
        }
    }

    /// Gives back `cost` previously consumed (never more than was taken).
    #[inline]
    pub(crate) fn refund(&mut self, quota: Quota, now: u64, cost: u64) {
        match (self, quota) {
            (State::Window(s), Quota::SlidingWindow { .. }) => s.refund(cost),
            (State::Log(s), Quota::SlidingLog { .. }) => s.refund(cost),
            (State::Gcra(s), Quota::Gcra { interval, .. }) => s.refund(now, interval, cost),
            _ => {}
        }
    }

    /// The instant from which this state is indistinguishable from a fresh one, so a store may
    /// forget it (the memory backend's eviction, the Redis key's expiry).
    #[inline]
    pub(crate) fn idle_at(&self, quota: Quota) -> u64 {
        match (self, quota) {
            (State::Window(s), Quota::SlidingWindow { window, .. }) => s.idle_at(window),
            (State::Log(s), Quota::SlidingLog { window, .. }) => s.idle_at(window),
            (State::Gcra(s), _) => s.idle_at(),
            _ => 0,
        }
    }
}
