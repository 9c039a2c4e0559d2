//! A sliding-window key packed into one word, so that a single-policy decision on it is one
//! compare-and-swap, like a GCRA key's.
//!
//! A window's state is three integers: the index of the current aligned window and the counts of
//! the current and previous windows. Both counts stay at most the limit (a check admits only what
//! fits under it), so each needs the limit's bit width, `c`, and the index gets the other
//! `64 − 2c` bits. A limit of 30 000 leaves 34 bits, enough for a one-second window until the
//! year 2514; a limit of 1 000 leaves 44, enough for a 1 ms window until 2527. Each slot records
//! the layout it was packed with, so a word is always read as it was written even if the
//! policy's limit changes later.
//!
//! When a state does not fit — a limit of 2^31 or more, or a window index wider than the bits
//! its limit leaves (a large limit over a short window, such as a million per second) — nothing
//! truncated is ever stored: the compare-and-swap gives up and the exclusive path keeps that
//! key's state unpacked.

use std::sync::atomic::{AtomicU64, Ordering};

use super::mode::Mode;
use super::table::{KeyHash, Slot};
use crate::algorithm::Status;
use crate::algorithm::sliding_window::WindowState;

/// How a state is packed: the window (µs) and the bit width `c` of each count, in one word
/// (`window << 6 | c`; a window is below 2^51 µs). Zero in an empty slot only.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(super) struct Packing(u64);

impl Packing {
    /// The layout for a quota of `limit` per `window` µs; `None` when the two counts would leave
    /// fewer than two bits for the index.
    #[inline]
    pub(super) fn of(limit: u64, window: u64) -> Option<Packing> {
        let count_bits = u64::from(u64::BITS - limit.leading_zeros());
        (count_bits <= 31 && window < 1 << 58).then_some(Packing(window << 6 | count_bits))
    }

    #[inline]
    fn window(self) -> u64 {
        self.0 >> 6
    }

    #[inline]
    fn count_bits(self) -> u32 {
        (self.0 & 63) as u32
    }

    /// The word for `state`, or `None` if one of its fields does not fit.
    #[inline]
    pub(super) fn pack(self, state: &WindowState) -> Option<u64> {
        let c = self.count_bits();
        let fits =
            state.current >> c == 0 && state.previous >> c == 0 && state.index >> (64 - 2 * c) == 0;
        fits.then(|| state.index << (2 * c) | state.current << c | state.previous)
    }

    #[inline]
    pub(super) fn unpack(self, word: u64) -> WindowState {
        let c = self.count_bits();
        let mask = (1 << c) - 1;
        WindowState {
            index: word >> (2 * c),
            current: (word >> c) & mask,
            previous: word & mask,
        }
    }
}

/// A packed sliding-window key: 32 bytes, aligned so it never straddles two cache lines.
#[derive(Debug, Default)]
#[repr(align(32))]
pub(super) struct WindowSlot {
    key: KeyHash,
    word: AtomicU64,
    packing: Packing,
}

impl Slot for WindowSlot {
    #[inline]
    fn key(&self) -> KeyHash {
        self.key
    }
}

impl WindowSlot {
    /// The slot for `state` packed as `packing`, if it fits.
    pub(super) fn new(key: KeyHash, packing: Packing, state: &WindowState) -> Option<Self> {
        Some(WindowSlot {
            key,
            word: AtomicU64::new(packing.pack(state)?),
            packing,
        })
    }

    /// The state stored.
    #[inline]
    pub(super) fn state(&self) -> WindowState {
        self.packing.unpack(self.word.load(Ordering::Relaxed))
    }

    /// Replaces the state under the exclusive lock; `false` (and nothing written) if it does not
    /// fit this slot's layout.
    pub(super) fn store(&mut self, state: &WindowState) -> bool {
        match self.packing.pack(state) {
            Some(word) => {
                *self.word.get_mut() = word;
                true
            }
            None => false,
        }
    }

    /// When the key turns idle (its state indistinguishable from a fresh one).
    pub(super) fn idle_at(&self) -> u64 {
        self.state().idle_at(self.packing.window())
    }

    /// The sliding-window decision on this key, lock-free: a compare-and-swap loop that writes
    /// only an admitted check, so a denial or a peek consumes nothing. `None`, with nothing
    /// written, when the state after the check would not fit the slot (the exclusive path then
    /// keeps it unpacked). Relaxed ordering suffices for the reason given at
    /// [`decide_gcra`](super::shard::decide_gcra).
    #[inline]
    pub(super) fn decide(
        &self,
        (limit, window): (u64, u64),
        now: u64,
        cost: u64,
        mode: Mode,
    ) -> Option<(Result<(), u64>, Status)> {
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            let mut state = self.packing.unpack(word);
            state.advance(now, window);
            let verdict = state.admits(now, limit, window, cost);
            if mode == Mode::Peek || verdict.is_err() {
                return Some((verdict, state.status(now, limit, window)));
            }
            state.consume(cost);
            let next = self.packing.pack(&state)?;
            match self
                .word
                .compare_exchange_weak(word, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some((verdict, state.status(now, limit, window))),
                Err(current) => word = current,
            }
        }
    }

    /// Gives back `cost`, lock-free. A refund only lowers counts, so the state always fits.
    pub(super) fn refund(&self, cost: u64) {
        let _ = self
            .word
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                let mut state = self.packing.unpack(word);
                state.refund(cost);
                self.packing.pack(&state)
            });
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_slot_is_half_a_cache_line() {
        assert_eq!(std::mem::size_of::<WindowSlot>(), 32);
        assert_eq!(std::mem::align_of::<WindowSlot>(), 32);
    }

    #[test]
    fn limits_too_wide_for_a_word_are_not_packed() {
        assert!(Packing::of((1 << 31) - 1, 1_000_000).is_some());
        assert!(Packing::of(1 << 31, 1_000_000).is_none());
        assert!(Packing::of(u64::MAX, 1).is_none());
    }

    proptest! {
        /// Whatever fits comes back unchanged; whatever does not is refused, never truncated.
        #[test]
        fn a_packed_state_reads_back_exactly(
            limit in 1u64..(1 << 31),
            index in any::<u64>(),
            current in any::<u64>(),
            previous in any::<u64>(),
            shift in 0u32..64,
        ) {
            let packing = Packing::of(limit, 1_000_000).expect("a packable limit");
            // Values of every width, not only huge ones.
            let state = WindowState {
                index: index >> shift,
                current: (current % (limit + 1)) >> (shift % 8),
                previous: previous >> shift,
            };
            let c = 64 - limit.leading_zeros();
            let fits = state.current < 1 << c
                && state.previous < 1 << c
                && u128::from(state.index) < 1u128 << (64 - 2 * c);
            match packing.pack(&state) {
                Some(word) => {
                    prop_assert!(fits);
                    prop_assert_eq!(packing.unpack(word), state);
                }
                None => prop_assert!(!fits),
            }
        }
    }
}
