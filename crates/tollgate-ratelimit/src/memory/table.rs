//! The fixed-size keys of one shard: open-addressing tables whose slot holds the key's hash and
//! its whole state together.
//!
//! A general hash table keeps its control bytes and its slots in two arrays, so a lookup touches
//! two cache lines; with a million keys that is two misses to memory per decision. Here a slot
//! holds the 128-bit hash as two words and the key's state in atomic words — 24 bytes for a GCRA
//! key, 32 for a packed sliding-window key — probed linearly from its home position, so a lookup
//! reads the hash and the state from the same line (occasionally the next one). The load stays at
//! most 3/4, which keeps probes short; removal shifts the following entries back, so there are no
//! tombstones to skip.
//!
//! Lookups take `&self` (the shard's shared lock), every change `&mut self` (the exclusive lock):
//! the table itself needs no synchronisation, only the states are atomic.

use std::hash::{Hash, Hasher};
use std::sync::atomic::AtomicU64;

/// A key's 128-bit hash as (low, high) words, the index of every table of a shard: 8-byte
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

/// A table slot: a key's hash and its state. The default value is the empty slot.
pub(super) trait Slot: Default {
    /// The key's hash; [`EMPTY`] in an empty slot.
    fn key(&self) -> KeyHash;
}

/// A GCRA key and its theoretical arrival time, which is also when the key turns idle.
#[derive(Debug, Default)]
pub(super) struct GcraSlot {
    pub(super) key: KeyHash,
    pub(super) tat: AtomicU64,
}

impl GcraSlot {
    pub(super) fn new(key: KeyHash, tat: u64) -> Self {
        GcraSlot {
            key,
            tat: AtomicU64::new(tat),
        }
    }
}

impl Slot for GcraSlot {
    #[inline]
    fn key(&self) -> KeyHash {
        self.key
    }
}

/// Keys and their states.
#[derive(Debug)]
pub(super) struct Table<S> {
    /// Empty, or a power of two of slots at most 3/4 full.
    slots: Box<[S]>,
    len: usize,
}

impl<S> Default for Table<S> {
    fn default() -> Self {
        Table {
            slots: Box::default(),
            len: 0,
        }
    }
}

impl<S: Slot> Table<S> {
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
            let slot = self.slots[i].key();
            if slot == key {
                return Ok(i);
            }
            if slot == EMPTY {
                return Err(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// The slot of `key`, if stored.
    #[inline]
    pub(super) fn get(&self, key: KeyHash) -> Option<&S> {
        if self.slots.is_empty() {
            return None;
        }
        self.find(key).ok().map(|i| &self.slots[i])
    }

    /// The slot of `key`, if stored, for a write under the exclusive lock.
    pub(super) fn get_mut(&mut self, key: KeyHash) -> Option<&mut S> {
        if self.slots.is_empty() {
            return None;
        }
        let i = self.find(key).ok()?;
        Some(&mut self.slots[i])
    }

    /// Stores `slot`, replacing the slot of the same key if there is one.
    pub(super) fn insert(&mut self, slot: S) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.resize(((self.len + 1) * 2).next_power_of_two().max(MIN_SLOTS));
        }
        match self.find(slot.key()) {
            Ok(i) => self.slots[i] = slot,
            Err(i) => {
                self.slots[i] = slot;
                self.len += 1;
            }
        }
    }

    /// Removes `key`; returns its slot if it was stored.
    pub(super) fn remove(&mut self, key: KeyHash) -> Option<S> {
        if self.slots.is_empty() {
            return None;
        }
        let mut hole = self.find(key).ok()?;
        let removed = std::mem::take(&mut self.slots[hole]);
        self.len -= 1;
        // Backward shift: move up every following entry whose home is not between the hole
        // and itself (cyclically), so every entry stays reachable from its home.
        let mask = self.slots.len() - 1;
        let mut next = (hole + 1) & mask;
        while self.slots[next].key() != EMPTY {
            let home = self.home(self.slots[next].key());
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(hole) & mask) {
                self.slots.swap(hole, next);
                hole = next;
            }
            next = (next + 1) & mask;
        }
        Some(removed)
    }

    /// Keeps the slots `keep` accepts, and shrinks the table to fit them.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&S) -> bool) {
        let kept = self.take_all(|slot| keep(slot));
        let slots = (kept.len() * 2).next_power_of_two().max(MIN_SLOTS);
        self.rebuild(slots, kept);
    }

    /// Every stored slot, in table order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &S> + '_ {
        self.slots.iter().filter(|slot| slot.key() != EMPTY)
    }

    /// Empties the table, returning the stored slots `keep` accepts.
    fn take_all(&mut self, mut keep: impl FnMut(&S) -> bool) -> Vec<S> {
        self.len = 0;
        std::mem::take(&mut self.slots)
            .into_vec()
            .into_iter()
            .filter(|slot| slot.key() != EMPTY && keep(slot))
            .collect()
    }

    fn resize(&mut self, slots: usize) {
        let stored = self.take_all(|_| true);
        self.rebuild(slots, stored);
    }

    fn rebuild(&mut self, slots: usize, stored: Vec<S>) {
        self.slots = (0..slots).map(|_| S::default()).collect();
        self.len = 0;
        for slot in stored {
            self.insert(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::Ordering;

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

    fn tat_of(slot: &GcraSlot) -> u64 {
        slot.tat.load(Ordering::Relaxed)
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
            let mut table = Table::<GcraSlot>::default();
            let mut model: HashMap<KeyHash, u64> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, tat) => {
                        table.insert(GcraSlot::new(key(k), tat));
                        model.insert(key(k), tat);
                        prop_assert_eq!(table.get(key(k)).map(tat_of), Some(tat));
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(table.remove(key(k)).map(|s| tat_of(&s)), model.remove(&key(k)));
                    }
                    Op::Retain(bound) => {
                        table.retain(|slot| tat_of(slot) > bound);
                        model.retain(|_, tat| *tat > bound);
                    }
                }
                prop_assert_eq!(table.len(), model.len());
                prop_assert!(table.slots.is_empty() || table.len * 4 <= table.slots.len() * 3);
            }
            for n in 0..=u8::MAX {
                let found = table.get(key(n)).map(tat_of);
                prop_assert_eq!(found, model.get(&key(n)).copied());
            }
        }
    }

    #[test]
    fn a_gcra_slot_is_three_words() {
        assert_eq!(std::mem::size_of::<GcraSlot>(), 24);
    }

    #[test]
    fn a_zero_hash_is_stored_apart_from_the_empty_marker() {
        let mut table = Table::<GcraSlot>::default();
        table.insert(GcraSlot::new(KeyHash::of(0), 7));
        assert_eq!(table.get(KeyHash::of(0)).map(tat_of), Some(7));
        assert_eq!(table.len(), 1);
        assert!(table.remove(KeyHash::of(0)).is_some());
        assert_eq!(table.len(), 0);
    }
}
