//! Exact sliding log: the admission time of every request still inside the window.

use std::collections::VecDeque;

use super::status::Status;

/// Admitted `(timestamp, cost)` pairs, oldest first, and their total cost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LogState {
    pub(crate) entries: VecDeque<(u64, u64)>,
    pub(crate) total: u64,
}

impl LogState {
    /// Drops entries that left the window: an entry admitted at `t` counts while `now < t + W`.
    pub(crate) fn advance(&mut self, now: u64, window: u64) {
        while let Some(&(at, cost)) = self.entries.front() {
            if at + window > now {
                break;
            }
            self.total -= cost;
            self.entries.pop_front();
        }
    }

    pub(crate) fn status(&self, now: u64, limit: u64, window: u64) -> Status {
        Status {
            remaining: limit.saturating_sub(self.total),
            reset_after: self
                .entries
                .back()
                .map_or(0, |&(at, _)| (at + window).saturating_sub(now)),
        }
    }

    pub(crate) fn admits(&self, now: u64, limit: u64, window: u64, cost: u64) -> Result<(), u64> {
        if self.total + cost <= limit {
            return Ok(());
        }
        let mut to_free = self.total + cost - limit;
        for &(at, entry_cost) in &self.entries {
            if entry_cost >= to_free {
                return Err((at + window).saturating_sub(now).max(1));
            }
            to_free -= entry_cost;
        }
        // Only reachable when cost > limit, which callers reject before asking.
        Err(window)
    }

    pub(crate) fn consume(&mut self, now: u64, cost: u64) {
        // Keep the log ordered even if the clock stepped back.
        let at = self.entries.back().map_or(now, |&(last, _)| last.max(now));
        self.entries.push_back((at, cost));
        self.total += cost;
    }

    /// Removes the most recent `cost` units.
    pub(crate) fn refund(&mut self, mut cost: u64) {
        while cost > 0 {
            let Some(last) = self.entries.back_mut() else {
                break;
            };
            let take = cost.min(last.1);
            last.1 -= take;
            self.total -= take;
            cost -= take;
            if last.1 == 0 {
                self.entries.pop_back();
            }
        }
    }

    pub(crate) fn idle_at(&self, window: u64) -> u64 {
        self.entries.back().map_or(0, |&(at, _)| at + window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_enough_entries_to_expire() {
        let mut s = LogState::default();
        s.consume(0, 2);
        s.consume(10, 1);
        s.consume(20, 1);
        // Full (4 of 4). Cost 3 needs the first two entries (3 units) gone: at 10 + 100.
        assert_eq!(s.admits(50, 4, 100, 3), Err(60));
        s.advance(100, 100);
        assert_eq!(s.total, 2);
        assert_eq!(s.status(100, 4, 100).reset_after, 20);
        s.refund(2);
        assert!(s.entries.is_empty());
    }
}
