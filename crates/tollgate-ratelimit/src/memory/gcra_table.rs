//! The GCRA keys of one shard: an open-addressing table whose slot holds the key's hash and its
//! timestamp together.
//!
//! A general hash table keeps its control bytes and its slots in two arrays, so a lookup touches
//! two cache lines; with a million keys that is two misses to memory per decision. Here a slot is
//! 24 bytes — the 128-bit hash as two words and the `AtomicU64` theoretical arrival time — probed
//! linearly from its home position, so a lookup reads the hash and the state from the same line
//! (occasionally the next one). The load stays at most 3/4, which keeps probes short; removal
//! shifts the following entries back, so there are no tombstones to skip.
//!
//! Lookups take `&self` (the shard's shared lock), every change `&mut self` (the exclusive lock):
//! the table itself needs no synchronisation, only the timestamps are atomic.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// A key's 128-bit hash as (low, high) words, the index of both of a shard's tables: 8-byte
/// aligned, so a GCRA slot is 24 bytes (a `u128` is 16-byte aligned and would pad it to 32).
/// All zeros marks an empty slot here, so a hash of zero becomes `(1, 0)` (one more collision
/// among 2^128 values).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(super) struct KeyHash(u64, u64);

const EMPTY: KeyHash = KeyHash(0, 0);

impl KeyHash {
    /// The stored form of a [`PolicyKey`](crate::PolicyKey)'s hash: never the empty marker.
    #[inline]
    pub(super) fn of(hash: u128) -> Self {
        let key = KeyHash(hash as u64, (hash >> 64) as u64);
        if key == EMPTY { KeyHash(1, 0) } else { key }
    }
}

impl Hash for KeyHash {
    /// The low word only: the hash is already uniform (and the shard was chosen by the high one).
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

/// The smallest table allocated (slots).
const MIN_SLOTS: usize = 16;

#[derive(Debug, Default)]
struct Slot {
    key: KeyHash,
    tat: AtomicU64,
}

/// GCRA keys and their theoretical arrival times.
#[derive(Debug, Default)]
pub(super) struct GcraTable {
    /// Empty, or a power of two of slots at most 3/4 full.
    slots: Box<[Slot]>,
    len: usize,
}

impl GcraTable {
    /// Keys stored.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn home(&self, key: KeyHash) -> usize {
        // The low word indexes the table; the shard was chosen by the high one.
        key.0 as usize & (self.slots.len() - 1)
    }

    /// The index of `key`'s slot, or `Err(index of the empty slot where it would go)`.
    #[inline]
    fn find(&self, key: KeyHash) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let slot = &self.slots[i];
            if slot.key == key {
                return Ok(i);
            }
            if slot.key == EMPTY {
                return Err(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// The timestamp of `key`, if stored.
    #[inline]
    pub(super) fn get(&self, key: KeyHash) -> Option<&AtomicU64> {
        if self.slots.is_empty() {
            return None;
        }
        self.find(key).ok().map(|i| &self.slots[i].tat)
    }

    /// The timestamp of `key`, if stored, for a write under the exclusive lock.
    pub(super) fn get_mut(&mut self, key: KeyHash) -> Option<&mut u64> {
        if self.slots.is_empty() {
            return None;
        }
        let i = self.find(key).ok()?;
        Some(self.slots[i].tat.get_mut())
    }

    /// Stores `key` (not stored yet) with `tat`.
    pub(super) fn insert(&mut self, key: KeyHash, tat: u64) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.resize(((self.len + 1) * 2).next_power_of_two().max(MIN_SLOTS));
        }
        match self.find(key) {
            Ok(i) => *self.slots[i].tat.get_mut() = tat,
            Err(i) => {
                self.slots[i] = Slot {
                    key,
                    tat: AtomicU64::new(tat),
                };
                self.len += 1;
            }
        }
    }

    /// Removes `key`; returns whether it was stored.
    pub(super) fn remove(&mut self, key: KeyHash) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let Ok(mut hole) = self.find(key) else {
            return false;
        };
        let mask = self.slots.len() - 1;
        self.slots[hole] = Slot::default();
        self.len -= 1;
        // Backward shift: move up every following entry whose home is not between the hole
        // and itself (cyclically), so every entry stays reachable from its home.
        let mut next = (hole + 1) & mask;
        while self.slots[next].key != EMPTY {
            let home = self.home(self.slots[next].key);
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(hole) & mask) {
                self.slots.swap(hole, next);
                hole = next;
            }
            next = (next + 1) & mask;
        }
        true
    }

    /// Keeps the keys whose timestamp `keep` accepts, and shrinks the table to fit them.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        let kept: Vec<(KeyHash, u64)> = self.entries().filter(|&(_, tat)| keep(tat)).collect();
        let slots = (kept.len() * 2).next_power_of_two().max(MIN_SLOTS);
        self.rebuild(slots, kept);
    }

    /// Every key and timestamp, in table order.
    pub(super) fn entries(&self) -> impl Iterator<Item = (KeyHash, u64)> + '_ {
        self.slots
            .iter()
            .filter(|slot| slot.key != EMPTY)
            .map(|slot| (slot.key, slot.tat.load(Ordering::Relaxed)))
    }

    fn resize(&mut self, slots: usize) {
        let entries: Vec<(KeyHash, u64)> = self.entries().collect();
        self.rebuild(slots, entries);
    }

    fn rebuild(&mut self, slots: usize, entries: Vec<(KeyHash, u64)>) {
        self.slots = (0..slots).map(|_| Slot::default()).collect();
        self.len = 0;
        for (key, tat) in entries {
            self.insert(key, tat);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u8, u64),
        Remove(u8),
        Retain(u64),
    }

    /// Keys from a small space, with colliding low words, so probes, wrap-around and backward
    /// shifts happen often.
    fn key(n: u8) -> KeyHash {
        KeyHash::of(u128::from(n % 7) | (u128::from(n) << 64))
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<u8>(), any::<u64>()).prop_map(|(k, t)| Op::Insert(k, t)),
            3 => any::<u8>().prop_map(Op::Remove),
            1 => any::<u64>().prop_map(Op::Retain),
        ]
    }

    proptest! {
        /// The table against a `HashMap`: same keys, same timestamps, after any sequence of
        /// inserts, removals and sweeps.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(op(), 1..400)) {
            let mut table = GcraTable::default();
            let mut model: HashMap<KeyHash, u64> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, tat) => {
                        table.insert(key(k), tat);
                        model.insert(key(k), tat);
                        prop_assert_eq!(table.get(key(k)).map(|t| t.load(Ordering::Relaxed)), Some(tat));
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(table.remove(key(k)), model.remove(&key(k)).is_some());
                    }
                    Op::Retain(bound) => {
                        table.retain(|tat| tat > bound);
                        model.retain(|_, tat| *tat > bound);
                    }
                }
                prop_assert_eq!(table.len(), model.len());
                prop_assert!(table.slots.is_empty() || table.len * 4 <= table.slots.len() * 3);
            }
            for n in 0..=u8::MAX {
                let found = table.get(key(n)).map(|tat| tat.load(Ordering::Relaxed));
                prop_assert_eq!(found, model.get(&key(n)).copied());
            }
        }
    }

    #[test]
    fn a_zero_hash_is_stored_apart_from_the_empty_marker() {
        let mut table = GcraTable::default();
        table.insert(KeyHash::of(0), 7);
        assert_eq!(
            table.get(KeyHash::of(0)).map(|t| t.load(Ordering::Relaxed)),
            Some(7)
        );
        assert_eq!(table.len(), 1);
        assert!(table.remove(KeyHash::of(0)));
        assert_eq!(table.len(), 0);
    }
}
