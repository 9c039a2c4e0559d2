//! A bounded in-memory audit log, queryable per user, in which no user can push out another's
//! trail.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::{AuditEvent, AuditLog, AuditSink, Error, Page, PageRequest};

#[derive(Debug, Default)]
struct Trails {
    /// Each user's events, oldest first.
    by_user: HashMap<String, VecDeque<AuditEvent>>,
    total: usize,
}

impl Trails {
    /// Drops the oldest event of the longest trail: a user holding more than anyone else gives
    /// way first, so a flood from one user never pushes out another's smaller trail.
    fn evict_from_longest(&mut self) {
        let longest = self
            .by_user
            .iter()
            .max_by_key(|(_, trail)| trail.len())
            .map(|(user, _)| user.clone());
        if let Some(user) = longest {
            self.pop_oldest(&user);
        }
    }

    fn pop_oldest(&mut self, user: &str) {
        let Some(trail) = self.by_user.get_mut(user) else {
            return;
        };
        if trail.pop_front().is_some() {
            self.total -= 1;
        }
        if trail.is_empty() {
            self.by_user.remove(user);
        }
    }
}

/// The newest events in memory, at most `per_user` for any one user and `capacity` in all;
/// older ones are dropped (and counted).
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
        let trails = &mut *trails;
        // Two lookups for a user seen before rather than a copy of the name for every event.
        if !trails.by_user.contains_key(&event.user_id) {
            trails
                .by_user
                .insert(event.user_id.clone(), VecDeque::new());
        }
        let Some(trail) = trails.by_user.get_mut(&event.user_id) else {
            return Ok(());
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
        if trail.len() > self.per_user {
            // The user's own oldest gives way; the trail keeps at least the event just added.
            trail.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        trails.total += 1;
        if trails.total > self.capacity {
            trails.evict_from_longest();
            self.dropped.fetch_add(1, Ordering::Relaxed);
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
}
