//! A bounded in-memory audit log, queryable per user, in which no user can push out another's
//! trail.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::{AuditEvent, AuditLog, AuditSink, Error, Page, PageRequest};

#[derive(Debug, Default)]
struct Trails {
    /// Each user's events, oldest first.
    by_user: HashMap<Arc<str>, VecDeque<AuditEvent>>,
    /// `(trail length, user)` for every user, ordered, so the longest trail is the last entry.
    /// Built when the log first fills (before that nothing is evicted, so nothing pays for it)
    /// and kept from then on: a full log then finds the longest trail in O(log users), where a
    /// scan over every user would cost each event time in proportion to the users.
    by_length: Option<BTreeSet<(usize, Arc<str>)>>,
    total: usize,
}

impl Trails {
    /// Adds `event` to its user's trail, in id order; past `per_user`, the user's own oldest
    /// event gives way (the trail keeps at least the event just added). Returns whether an
    /// event was dropped.
    fn push(&mut self, event: AuditEvent, per_user: usize) -> bool {
        let user = event.user_id.as_str();
        // Looking a known user up again below costs less than a copy of the name per event.
        let before = match self.by_user.get(user) {
            Some(trail) => trail.len(),
            None => {
                self.by_user.insert(Arc::from(user), VecDeque::new());
                0
            }
        };
        let trimmed = before >= per_user;
        if !trimmed {
            self.total += 1;
            self.reindex(user, before);
        }
        let Some(trail) = self.by_user.get_mut(user) else {
            return false;
        };
        // Keep id order even if events arrive slightly out of order (ids are time-ordered). In
        // order is the rule: appending then touches one cache line, where a binary search
        // through a long trail would miss the cache at every step.
        if trail.back().is_none_or(|last| last.id < event.id) {
            trail.push_back(event);
        } else {
            let at = trail.partition_point(|e| e.id < event.id);
            trail.insert(at, event);
        }
        if trimmed {
            trail.pop_front();
        }
        trimmed
    }

    /// Drops the oldest event of the longest trail: a user holding more than anyone else gives
    /// way first, so a flood from one user never pushes out another's smaller trail.
    fn evict_from_longest(&mut self) {
        let by_user = &self.by_user;
        let by_length = self.by_length.get_or_insert_with(|| {
            by_user
                .iter()
                .map(|(user, trail)| (trail.len(), Arc::clone(user)))
                .collect()
        });
        let Some((length, user)) = by_length.pop_last() else {
            return;
        };
        if let Some(trail) = self.by_user.get_mut(&user) {
            trail.pop_front();
            self.total -= 1;
        }
        if length > 1 {
            by_length.insert((length - 1, user));
        } else {
            self.by_user.remove(&user);
        }
    }

    /// Records in the length index, if it is kept, that `user` grows from `before` events.
    fn reindex(&mut self, user: &str, before: usize) {
        let (Some(by_length), Some((user, _))) =
            (&mut self.by_length, self.by_user.get_key_value(user))
        else {
            return;
        };
        if before > 0 {
            by_length.remove(&(before, Arc::clone(user)));
        }
        by_length.insert((before + 1, Arc::clone(user)));
    }
}

/// The newest events in memory, at most `per_user` for any one user and `capacity` in all;
/// older ones are dropped (and counted). Once full, each event costs O(log users) to find the
/// trail that gives way.
#[derive(Debug)]
pub struct MemoryAuditLog {
    trails: Mutex<Trails>,
    capacity: usize,
    per_user: usize,
    dropped: AtomicU64,
}

impl MemoryAuditLog {
    /// A log holding at most `capacity` events in all; when full, the user holding the most
    /// gives way.
    pub fn new(capacity: usize) -> Self {
        MemoryAuditLog::with_limits(capacity, capacity)
    }

    /// A log holding at most `capacity` events in all and `per_user` for any one user: a user
    /// past their bound drops their own oldest events; when the whole log is full, the user
    /// holding the most gives way.
    pub fn with_limits(capacity: usize, per_user: usize) -> Self {
        let capacity = capacity.max(1);
        MemoryAuditLog {
            trails: Mutex::new(Trails::default()),
            capacity,
            per_user: per_user.clamp(1, capacity),
            dropped: AtomicU64::new(0),
        }
    }

    /// Events pushed out by newer ones since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.trails.lock().total
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl AuditSink for MemoryAuditLog {
    async fn record(&self, event: AuditEvent) -> Result<(), Error> {
        let mut trails = self.trails.lock();
        let mut dropped = u64::from(trails.push(event, self.per_user));
        if trails.total > self.capacity {
            trails.evict_from_longest();
            dropped += 1;
        }
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
            crate::telemetry::dropped("memory", dropped);
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), Error> {
        Ok(())
    }
}

#[async_trait]
impl AuditLog for MemoryAuditLog {
    async fn page(&self, user_id: &str, request: PageRequest) -> Result<Page, Error> {
        let before = request.before();
        let trails = self.trails.lock();
        let entries: Vec<AuditEvent> = trails
            .by_user
            .get(user_id)
            .into_iter()
            .flat_map(|trail| trail.iter().rev())
            .filter(|e| before.is_none_or(|b| e.id < b))
            .take(request.limit() + 1)
            .cloned()
            .collect();
        Ok(Page::from_overfetch(entries, request.limit()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, Outcome};

    fn event(user: &str) -> AuditEvent {
        AuditEvent::new(user, Action::RATE_LIMITED, Outcome::Denied)
    }

    #[tokio::test]
    async fn one_users_flood_leaves_the_others_trails_alone() {
        let log = MemoryAuditLog::with_limits(100, 10);
        for _ in 0..5 {
            log.record(event("alice")).await.expect("recorded");
        }
        for _ in 0..10_000 {
            log.record(event("mallory")).await.expect("recorded");
        }
        let alice = log
            .page("alice", PageRequest::new(Some(100), None).expect("a page"))
            .await
            .expect("a page");
        assert_eq!(alice.entries.len(), 5);
        let mallory = log
            .page(
                "mallory",
                PageRequest::new(Some(100), None).expect("a page"),
            )
            .await
            .expect("a page");
        assert_eq!(mallory.entries.len(), 10, "mallory keeps only their newest");
        assert_eq!(log.len(), 15);
        assert_eq!(log.dropped(), 9_990);
    }

    #[tokio::test]
    async fn a_full_log_evicts_from_the_longest_trail() {
        let log = MemoryAuditLog::with_limits(20, 15);
        for user in ["a", "b"] {
            for _ in 0..5 {
                log.record(event(user)).await.expect("recorded");
            }
        }
        for _ in 0..15 {
            log.record(event("c")).await.expect("recorded");
        }
        assert_eq!(log.len(), 20);
        for (user, held) in [("a", 5), ("b", 5), ("c", 10)] {
            let page = log
                .page(user, PageRequest::new(Some(100), None).expect("a page"))
                .await
                .expect("a page");
            assert_eq!(page.entries.len(), held, "{user}");
        }
    }

    mod model {
        use std::collections::BTreeMap;

        use proptest::prelude::*;

        use super::*;

        /// Drives `record` without a runtime (the memory log never waits).
        fn record(log: &MemoryAuditLog, user: &str) {
            let future = log.record(event(user));
            let mut future = std::pin::pin!(future);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let std::task::Poll::Ready(result) = future.as_mut().poll(&mut cx) else {
                panic!("the memory log never waits");
            };
            result.expect("recorded");
        }

        proptest! {
            /// Events from a handful of users against a model that only counts: each user's
            /// trail length, the total and the dropped count match after every event, and the
            /// length index, once built, lists exactly every user with their trail's length.
            #[test]
            fn bounds_and_evictions_match_a_counting_model(
                capacity in 1usize..40,
                per_user in 1usize..40,
                users in proptest::collection::vec(0u8..6, 1..300),
            ) {
                let log = MemoryAuditLog::with_limits(capacity, per_user);
                let per_user = per_user.clamp(1, capacity);
                let mut model: BTreeMap<String, usize> = BTreeMap::new();
                let mut dropped = 0u64;
                for user in users {
                    let user = format!("user-{user}");
                    record(&log, &user);
                    let held = model.entry(user).or_default();
                    if *held == per_user {
                        dropped += 1;
                    } else {
                        *held += 1;
                        if model.values().sum::<usize>() > capacity {
                            // The longest trail gives way; among equals, the greatest name.
                            let longest = model
                                .iter()
                                .max_by_key(|&(name, held)| (*held, name.clone()))
                                .map(|(name, _)| name.clone())
                                .expect("a user");
                            *model.get_mut(&longest).expect("held") -= 1;
                            model.retain(|_, held| *held > 0);
                            dropped += 1;
                        }
                    }
                    let trails = log.trails.lock();
                    let lengths: BTreeMap<String, usize> = trails
                        .by_user
                        .iter()
                        .map(|(user, trail)| (user.to_string(), trail.len()))
                        .collect();
                    prop_assert_eq!(&lengths, &model);
                    prop_assert_eq!(trails.total, model.values().sum::<usize>());
                    if let Some(by_length) = &trails.by_length {
                        let indexed: BTreeMap<String, usize> = by_length
                            .iter()
                            .map(|(held, user)| (user.to_string(), *held))
                            .collect();
                        prop_assert_eq!(by_length.len(), lengths.len());
                        prop_assert_eq!(&indexed, &lengths);
                    }
                    drop(trails);
                    prop_assert_eq!(log.dropped(), dropped);
                }
            }
        }
    }
}
