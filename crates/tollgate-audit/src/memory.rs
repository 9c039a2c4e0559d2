//! A bounded in-memory audit log: the newest `capacity` events, queryable per user.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::{AuditEvent, AuditLog, AuditSink, Error, Page, PageRequest};

/// The newest `capacity` events in memory; older ones are dropped (and counted).
#[derive(Debug)]
pub struct MemoryAuditLog {
    events: Mutex<VecDeque<AuditEvent>>,
    capacity: usize,
    dropped: AtomicU64,
}

impl MemoryAuditLog {
    /// A ring holding at most `capacity` events.
    pub fn new(capacity: usize) -> Self {
        MemoryAuditLog {
            events: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    /// Events pushed out by newer ones since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.events.lock().len()
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl AuditSink for MemoryAuditLog {
    async fn record(&self, event: AuditEvent) -> Result<(), Error> {
        let mut events = self.events.lock();
        if events.len() == self.capacity {
            events.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        // Keep id order even if events arrive slightly out of order (ids are time-ordered).
        let at = events.partition_point(|e| e.id < event.id);
        events.insert(at, event);
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
        let events = self.events.lock();
        let entries: Vec<AuditEvent> = events
            .iter()
            .rev()
            .filter(|e| e.user_id == user_id && before.is_none_or(|b| e.id < b))
            .take(request.limit() + 1)
            .cloned()
            .collect();
        Ok(Page::from_overfetch(entries, request.limit()))
    }
}
