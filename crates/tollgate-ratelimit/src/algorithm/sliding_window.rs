//! Sliding-window counter (the approximation popularised by Cloudflare and Figma).
//!
//! The window is cut into aligned slots of length `W`. A key keeps the count of the current slot
//! and of the previous one; at `e` µs into the current slot, the estimated count of the sliding
//! window is `previous × (W − e) / W + current`. Comparisons are done multiplied through by `W`
//! so everything stays an exact integer.

use super::status::{Status, floor_div};

/// Counts of the current and previous aligned windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WindowState {
    /// Index of the current aligned window (`now / W`).
    pub(crate) index: u64,
    pub(crate) current: u64,
    pub(crate) previous: u64,
}

impl WindowState {
    #[inline]
    pub(crate) fn fresh(now: u64, window: u64) -> Self {
        WindowState {
            index: now / window,
            current: 0,
            previous: 0,
        }
    }

    /// Rolls the counts into `now`'s window. A clock that went backwards keeps the newer window.
    #[inline]
    pub(crate) fn advance(&mut self, now: u64, window: u64) {
        let index = now / window;
        if index == self.index + 1 {
            self.previous = self.current;
            self.current = 0;
        } else if index > self.index + 1 {
            self.previous = 0;
            self.current = 0;
        }
        self.index = self.index.max(index);
    }

    /// µs elapsed in the current window; 0 if the clock is behind the window's start.
    #[inline]
    fn elapsed(&self, now: u64, window: u64) -> u64 {
        now.saturating_sub(self.index * window).min(window)
    }

    /// The weighted count, multiplied by `W`.
    #[inline]
    fn used(&self, now: u64, window: u64) -> u64 {
        let e = self.elapsed(now, window);
        self.previous * (window - e) + self.current * window
    }

    #[inline]
    pub(crate) fn status(&self, now: u64, limit: u64, window: u64) -> Status {
        let remaining = floor_div(
            (limit * window).saturating_sub(self.used(now, window)),
            window,
        );
        let to_slot_end = window - self.elapsed(now, window);
        let reset_after = if self.current > 0 {
            to_slot_end + window
        } else if self.previous > 0 {
            to_slot_end
        } else {
            0
        };
        Status {
            remaining,
            reset_after,
        }
    }

    #[inline]
    pub(crate) fn admits(&self, now: u64, limit: u64, window: u64, cost: u64) -> Result<(), u64> {
        if self.used(now, window) + cost * window <= limit * window {
            return Ok(());
        }
        let e = self.elapsed(now, window);
        if self.current + cost <= limit {
            // Wait in this window until the previous window's weight has decayed enough:
            // previous × (W − e') ≤ (limit − current − cost) × W.
            let headroom = limit - self.current - cost;
            let k = floor_div(headroom * window, self.previous);
            Err((window - k).saturating_sub(e).max(1))
        } else {
            // Not even an empty previous window would do: wait for the next window, where this
            // window's count becomes the decaying one: current × (W − e'') ≤ (limit − cost) × W.
            let k = floor_div(limit.saturating_sub(cost) * window, self.current);
            Err((window - e) + window.saturating_sub(k))
        }
    }

    #[inline]
    pub(crate) fn consume(&mut self, cost: u64) {
        self.current += cost;
    }

    /// Takes `cost` back from the current window first, then from the previous one (the request
    /// may have been counted just before the window rolled).
    #[inline]
    pub(crate) fn refund(&mut self, cost: u64) {
        let from_current = cost.min(self.current);
        self.current -= from_current;
        self.previous = self.previous.saturating_sub(cost - from_current);
    }

    #[inline]
    pub(crate) fn idle_at(&self, window: u64) -> u64 {
        if self.current > 0 {
            (self.index + 2) * window
        } else if self.previous > 0 {
            (self.index + 1) * window
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = 60_000_000;

    #[test]
    fn previous_window_decays_linearly() {
        let mut s = WindowState::fresh(0, W);
        s.consume(100);
        s.advance(W + W / 4, W); // a quarter into the next window
        assert_eq!(s.previous, 100);
        // 75 of the previous 100 still count.
        assert_eq!(s.status(W + W / 4, 100, W).remaining, 25);
        assert!(s.admits(W + W / 4, 100, W, 25).is_ok());
        // 26 needs one more request's worth of decay: 0.6 s.
        assert_eq!(s.admits(W + W / 4, 100, W, 26), Err(600_000));
    }

    #[test]
    fn full_current_window_waits_for_the_next() {
        let mut s = WindowState::fresh(0, W);
        s.consume(10);
        let at = W / 2;
        // current + cost > limit: wait to the next window and then for 1/10 of it to pass.
        assert_eq!(s.admits(at, 10, W, 1), Err(W / 2 + W / 10));
        assert_eq!(s.status(at, 10, W).reset_after, W / 2 + W);
    }

    #[test]
    fn refund_and_idle() {
        let mut s = WindowState::fresh(0, W);
        s.consume(3);
        s.advance(W, W);
        s.consume(1);
        s.refund(2);
        assert_eq!((s.current, s.previous), (0, 2));
        assert_eq!(s.idle_at(W), 2 * W);
    }
}
