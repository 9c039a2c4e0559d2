//! One shard of the memory limiter: its three tables, the compare-and-swaps, and how a shard
//! stays bounded.
//!
//! GCRA keys live in a [`Table`] of their own whose whole state is one atomic timestamp, and
//! sliding-window keys in another whose state is packed into one atomic word ([`WindowSlot`]).
//! So a single-policy decision on either needs only the shard's *shared* lock and one
//! compare-and-swap: concurrent decisions on a shard run in parallel, and a lookup reads one
//! cache line. Sliding-log keys (and window states too wide for a word) live in a general map;
//! they, every insertion and every decision over several keys take the shard's exclusive lock,
//! which also shuts out the compare-and-swaps, so a multi-policy decision stays atomic.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use super::mode::Mode;
use super::table::{GcraSlot, KeyHash, Slot, Table};
use super::window_slot::{Packing, WindowSlot};
use crate::algorithm::gcra::GcraState;
use crate::algorithm::sliding_window::WindowState;
use crate::algorithm::{State, Status};
use crate::policy::Quota;

/// Shards smaller than this are not swept (a sweep would cost more than the keys it frees).
const MIN_SWEEP_INTERVAL: usize = 64;

/// How many keys of each table are looked at to choose one to evict from a full shard.
const EVICTION_SAMPLE: usize = 8;

/// Tables are indexed by [`PolicyKey`](crate::PolicyKey)'s precomputed 128-bit hash, so the
/// table's own hasher only passes the low 64 bits through.
type KeyMap<V> = HashMap<KeyHash, V, BuildHasherDefault<PreHashed>>;

#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if a key type other than `KeyHash` is ever used; still a valid hash.
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// An unpacked key's state and the instant from which it is indistinguishable from a fresh one.
#[derive(Debug)]
struct Entry {
    state: State,
    idle_at: u64,
}

/// The bounds a shard enforces when it inserts.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub(super) max_keys_per_shard: usize,
    /// µs a key must have been idle before a sweep forgets it (hot keys that touch "idle"
    /// between requests, such as a barely used token bucket, would otherwise churn).
    pub(super) idle_grace: u64,
}

/// A verdict (`Err` holds the µs to wait), the key's status, and the live keys evicted to make
/// room for it.
pub(super) type Outcome = (Result<(), u64>, Status, u64);

/// One lock and its tables, on a cache line of its own so neighbouring locks do not
/// false-share.
#[derive(Debug)]
#[repr(align(128))]
pub(super) struct Shard(pub(super) RwLock<ShardMap>);

#[derive(Debug)]
pub(super) struct ShardMap {
    /// GCRA keys: the theoretical arrival time, which is also when the key turns idle.
    gcra: Table<GcraSlot>,
    /// Sliding-window keys whose state fits one word.
    windows: Table<WindowSlot>,
    /// Sliding-log keys, and sliding-window keys whose state does not fit a word. A
    /// sliding-window decision looks in `windows` first, and a window state goes into `entries`
    /// only for a key that is not in `windows`.
    entries: KeyMap<Entry>,
    inserts_since_sweep: usize,
    /// Insertions between sweeps: the size left by the last sweep, so a sweep's cost is paid for
    /// by as many insertions.
    sweep_after: usize,
}

/// The GCRA decision on one key's timestamp, lock-free: a compare-and-swap loop that writes only
/// an admitted check, so a denial or a peek consumes nothing. Relaxed ordering suffices: each
/// timestamp is its own variable, and the exclusive lock orders it against multi-key decisions.
#[inline]
pub(super) fn decide_gcra(
    cell: &AtomicU64,
    (interval, tolerance): (u64, u64),
    now: u64,
    cost: u64,
    mode: Mode,
) -> (Result<(), u64>, Status) {
    let mut tat = cell.load(Ordering::Relaxed);
    loop {
        let mut state = GcraState { tat };
        let verdict = state.admits(now, interval, tolerance, cost);
        if mode == Mode::Peek || verdict.is_err() {
            return (verdict, state.status(now, interval, tolerance));
        }
        state.consume(now, interval, cost);
        match cell.compare_exchange_weak(tat, state.tat, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return (verdict, state.status(now, interval, tolerance)),
            Err(current) => tat = current,
        }
    }
}

/// `(limit, window)` of a sliding-window quota.
#[inline]
fn window_quota(quota: Quota) -> Option<(u64, u64)> {
    match quota {
        Quota::SlidingWindow { limit, window } => Some((limit, window)),
        _ => None,
    }
}

/// `(interval, tolerance)` of a GCRA quota.
#[inline]
pub(super) fn gcra_quota(quota: Quota) -> Option<(u64, u64)> {
    match quota {
        Quota::Gcra {
            interval,
            tolerance,
        } => Some((interval, tolerance)),
        _ => None,
    }
}

impl ShardMap {
    pub(super) fn new() -> Self {
        ShardMap {
            gcra: Table::default(),
            windows: Table::default(),
            entries: KeyMap::default(),
            inserts_since_sweep: 0,
            sweep_after: MIN_SWEEP_INTERVAL,
        }
    }

    /// Keys tracked.
    pub(super) fn len(&self) -> usize {
        self.gcra.len() + self.windows.len() + self.entries.len()
    }

    /// The single-key decision under the shared lock, for a GCRA key or a packed sliding-window
    /// key; `None` when the key is not tracked yet (inserting it needs the exclusive lock), its
    /// state would no longer fit a word, or it is a sliding-log key.
    #[inline]
    pub(super) fn decide_tracked(
        &self,
        key: u128,
        quota: Quota,
        now: u64,
        cost: u64,
        mode: Mode,
    ) -> Option<(Result<(), u64>, Status)> {
        let key = KeyHash::of(key);
        match quota {
            Quota::Gcra {
                interval,
                tolerance,
            } => {
                let slot = self.gcra.get(key)?;
                Some(decide_gcra(
                    &slot.tat,
                    (interval, tolerance),
                    now,
                    cost,
                    mode,
                ))
            }
            Quota::SlidingWindow { limit, window } => {
                self.windows
                    .get(key)?
                    .decide((limit, window), now, cost, mode)
            }
            Quota::SlidingLog { .. } => None,
        }
    }

    /// The whole decision for a single key, under the exclusive lock.
    pub(super) fn decide_one(
        &mut self,
        key: u128,
        quota: Quota,
        now: u64,
        cost: u64,
        mode: Mode,
        limits: Limits,
    ) -> Outcome {
        if let Some((verdict, status)) = self.decide_tracked(key, quota, now, cost, mode) {
            return (verdict, status, 0);
        }
        let hash = KeyHash::of(key);
        if let Some(gcra) = gcra_quota(quota) {
            let fresh = AtomicU64::new(now);
            let (verdict, status) = decide_gcra(&fresh, gcra, now, cost, mode);
            if mode == Mode::Peek || verdict.is_err() {
                return (verdict, status, 0);
            }
            let evicted = self.make_room(now, limits);
            self.gcra.insert(GcraSlot::new(hash, fresh.into_inner()));
            return (verdict, status, evicted);
        }
        let consume = mode == Mode::Check;
        let packed = window_quota(quota).and_then(|_| self.windows.remove(hash));
        if let Some(slot) = packed {
            // Tracked, but the admitted state no longer fits the slot's layout: decide unpacked,
            // then store it however the quota's layout allows.
            let mut state = State::Window(slot.state());
            let (verdict, status) = state.decide(quota, now, cost, consume);
            self.put(hash, state, quota);
            return (verdict, status, 0);
        }
        if let Some(entry) = self.entries.get_mut(&hash) {
            let (verdict, status) = entry.state.decide(quota, now, cost, consume);
            if consume && verdict.is_ok() {
                entry.idle_at = entry.state.idle_at(quota);
            }
            return (verdict, status, 0);
        }
        let mut state = State::fresh(quota, now);
        let (verdict, status) = state.decide(quota, now, cost, consume);
        if !consume || verdict.is_err() {
            return (verdict, status, 0);
        }
        let evicted = self.make_room(now, limits);
        self.put(hash, state, quota);
        (verdict, status, evicted)
    }

    /// Brings the key's state to `now` and asks whether it admits `cost`.
    pub(super) fn admits(
        &mut self,
        key: u128,
        quota: Quota,
        now: u64,
        cost: u64,
    ) -> Result<(), u64> {
        if let Some((interval, tolerance)) = gcra_quota(quota) {
            return self
                .gcra_state(key, now)
                .admits(now, interval, tolerance, cost);
        }
        if let Some((state, (limit, window))) = self.packed_window(key, quota, now) {
            return state.admits(now, limit, window, cost);
        }
        match self.entries.get_mut(&KeyHash::of(key)) {
            Some(entry) if entry.state.matches(quota) => {
                entry.state.advance(quota, now);
                entry.state.admits(quota, now, cost)
            }
            _ => State::fresh(quota, now).admits(quota, now, cost),
        }
    }

    pub(super) fn status(&self, key: u128, quota: Quota, now: u64) -> Status {
        if let Some((interval, tolerance)) = gcra_quota(quota) {
            return self.gcra_state(key, now).status(now, interval, tolerance);
        }
        if let Some((state, (limit, window))) = self.packed_window(key, quota, now) {
            return state.status(now, limit, window);
        }
        match self.entries.get(&KeyHash::of(key)) {
            Some(entry) => entry.state.status(quota, now),
            None => State::fresh(quota, now).status(quota, now),
        }
    }

    /// Records `cost` admitted; returns how many live keys had to go to make room.
    pub(super) fn consume(
        &mut self,
        key: u128,
        quota: Quota,
        now: u64,
        cost: u64,
        limits: Limits,
    ) -> u64 {
        let hash = KeyHash::of(key);
        if let Some((interval, _)) = gcra_quota(quota) {
            if let Some(slot) = self.gcra.get_mut(hash) {
                let tat = slot.tat.get_mut();
                let mut state = GcraState { tat: *tat };
                state.consume(now, interval, cost);
                *tat = state.tat;
                return 0;
            }
            let mut state = GcraState::fresh(now);
            state.consume(now, interval, cost);
            let evicted = self.make_room(now, limits);
            self.gcra.insert(GcraSlot::new(hash, state.tat));
            return evicted;
        }
        if let Some((mut state, _)) = self.packed_window(key, quota, now) {
            state.consume(cost);
            let stored = self
                .windows
                .get_mut(hash)
                .is_some_and(|slot| slot.store(&state));
            if !stored {
                self.windows.remove(hash);
                self.put(hash, State::Window(state), quota);
            }
            return 0;
        }
        if let Some(entry) = self.entries.get_mut(&hash) {
            if !entry.state.matches(quota) {
                entry.state = State::fresh(quota, now);
            }
            entry.state.consume(quota, now, cost);
            entry.idle_at = entry.state.idle_at(quota);
            return 0;
        }
        let mut state = State::fresh(quota, now);
        state.consume(quota, now, cost);
        let evicted = self.make_room(now, limits);
        self.put(hash, state, quota);
        evicted
    }

    /// Gives back `cost` to a GCRA key (emission interval `interval`), under the shared lock.
    pub(super) fn refund_gcra(&self, key: u128, interval: u64, now: u64, cost: u64) {
        if let Some(slot) = self.gcra.get(KeyHash::of(key)) {
            let _ = slot
                .tat
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                    let mut state = GcraState { tat };
                    state.refund(now, interval, cost);
                    Some(state.tat)
                });
        }
    }

    /// Gives back `cost` to a sliding-window or sliding-log key.
    /// Drops `key` from whichever table holds it: it starts again as a key never seen.
    pub(super) fn forget(&mut self, key: u128) {
        let hash = KeyHash::of(key);
        let _ = self.gcra.remove(hash);
        let _ = self.windows.remove(hash);
        let _ = self.entries.remove(&hash);
    }

    pub(super) fn refund(&mut self, key: u128, quota: Quota, now: u64, cost: u64) {
        let hash = KeyHash::of(key);
        if let Some(slot) = window_quota(quota).and_then(|_| self.windows.get(hash)) {
            slot.refund(cost);
            return;
        }
        if let Some(entry) = self.entries.get_mut(&hash) {
            entry.state.refund(quota, now, cost);
            entry.idle_at = entry.state.idle_at(quota);
        }
    }

    fn gcra_state(&self, key: u128, now: u64) -> GcraState {
        let tat = self
            .gcra
            .get(KeyHash::of(key))
            .map_or(now, |slot| slot.tat.load(Ordering::Relaxed));
        GcraState { tat }
    }

    /// A packed sliding-window key's state brought to `now`, with the quota's `(limit, window)`,
    /// if `quota` is a sliding window and the key is packed.
    fn packed_window(
        &self,
        key: u128,
        quota: Quota,
        now: u64,
    ) -> Option<(WindowState, (u64, u64))> {
        let (limit, window) = window_quota(quota)?;
        let mut state = self.windows.get(KeyHash::of(key))?.state();
        state.advance(now, window);
        Some((state, (limit, window)))
    }

    /// Stores the state of a key that is in neither `windows` nor `entries`: a sliding-window
    /// state packed if it fits the quota's layout, anything else unpacked.
    fn put(&mut self, key: KeyHash, state: State, quota: Quota) {
        if let (State::Window(window_state), Some((limit, window))) = (&state, window_quota(quota))
        {
            let slot = Packing::of(limit, window)
                .and_then(|packing| WindowSlot::new(key, packing, window_state));
            if let Some(slot) = slot {
                self.windows.insert(slot);
                return;
            }
        }
        let idle_at = state.idle_at(quota);
        self.entries.insert(key, Entry { state, idle_at });
    }

    /// Sweeps keys idle for at least the grace period every `len` insertions, and evicts down to
    /// the bound; returns how many live keys had to go.
    fn make_room(&mut self, now: u64, limits: Limits) -> u64 {
        self.inserts_since_sweep += 1;
        if self.inserts_since_sweep >= self.sweep_after {
            let forget_before = now.saturating_sub(limits.idle_grace);
            self.gcra
                .retain(|slot| slot.tat.load(Ordering::Relaxed) > forget_before);
            self.windows.retain(|slot| slot.idle_at() > forget_before);
            self.entries
                .retain(|_, entry| entry.idle_at > forget_before);
            self.inserts_since_sweep = 0;
            self.sweep_after = self.len().max(MIN_SWEEP_INTERVAL);
        }
        let mut live_evicted = 0;
        while self.len() >= limits.max_keys_per_shard {
            match self.evict_closest_to_idle() {
                Some(idle_at) if idle_at > now => live_evicted += 1,
                Some(_) => {}
                None => break,
            }
        }
        live_evicted
    }

    /// Removes the key closest to idle among a sample of each table; returns when it would have
    /// turned idle.
    fn evict_closest_to_idle(&mut self) -> Option<u64> {
        let gcra = closest_to_idle(
            self.gcra
                .iter()
                .map(|slot| (slot.key, slot.tat.load(Ordering::Relaxed))),
        );
        let windows = closest_to_idle(self.windows.iter().map(|s| (s.key(), s.idle_at())));
        let other = closest_to_idle(self.entries.iter().map(|(&key, e)| (key, e.idle_at)));
        // A tie goes to the earlier table: either key is as close to idle.
        let (table, (key, idle_at)) = [(0, gcra), (1, windows), (2, other)]
            .into_iter()
            .filter_map(|(table, candidate)| Some((table, candidate?)))
            .min_by_key(|&(_, (_, idle_at))| idle_at)?;
        match table {
            0 => drop(self.gcra.remove(key)),
            1 => drop(self.windows.remove(key)),
            _ => drop(self.entries.remove(&key)),
        }
        Some(idle_at)
    }
}

/// The key closest to idle among the first [`EVICTION_SAMPLE`] of `keys`.
fn closest_to_idle(keys: impl Iterator<Item = (KeyHash, u64)>) -> Option<(KeyHash, u64)> {
    keys.take(EVICTION_SAMPLE)
        .min_by_key(|&(_, idle_at)| idle_at)
}
