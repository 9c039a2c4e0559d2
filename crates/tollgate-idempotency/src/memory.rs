//! The in-process store: a map under one lock, on an injectable clock, bounded, with expired
//! records swept as it grows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock, Timestamp};
use async_trait::async_trait;
use parking_lot::Mutex;

use crate::fingerprint::Fingerprint;
use crate::store::{Claim, ClaimOptions, IdempotencyStore, Lease, Release, StoredResponse};
use crate::{Error, Scope};

#[derive(Clone, Debug)]
enum State {
    InProgress { fence: u64, lease_until: Timestamp },
    Completed(StoredResponse),
}

#[derive(Clone, Debug)]
struct Record {
    fingerprint: Fingerprint,
    state: State,
    expires_at: Timestamp,
}

#[derive(Debug, Default)]
struct Records {
    map: HashMap<Scope, Record>,
    inserts_since_sweep: usize,
    /// Fences come from one counter for the whole store, never per record: a record that was
    /// released and claimed again must not hand out a fence an old zombie still holds.
    last_fence: u64,
}

impl Records {
    fn next_fence(&mut self) -> u64 {
        self.last_fence += 1;
        self.last_fence
    }
}

/// Records in this process's memory.
#[derive(Debug)]
pub struct MemoryStore {
    records: Mutex<Records>,
    clock: Arc<dyn Clock>,
    max_records: usize,
}

impl MemoryStore {
    /// A store on the system clock holding at most `max_records` live records.
    pub fn new(max_records: usize) -> Self {
        MemoryStore::with_clock(max_records, Arc::new(SystemClock::new()))
    }

    /// A store on `clock`.
    pub fn with_clock(max_records: usize, clock: Arc<dyn Clock>) -> Self {
        MemoryStore {
            records: Mutex::new(Records::default()),
            clock,
            max_records: max_records.max(1),
        }
    }

    /// Records held, expired or not.
    pub fn len(&self) -> usize {
        self.records.lock().map.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl MemoryStore {
    /// Claims `scope` only if it has no live record, at once (no `await`): the memory
    /// counterpart of `PostgresStore::claim_statement`, for a claim hook that writes its own
    /// first record in the same step, with nothing another task could run in between. `None`:
    /// the key has a record, and the usual [`claim`](IdempotencyStore::claim) decides.
    pub fn claim_if_absent(
        &self,
        scope: &Scope,
        fingerprint: &Fingerprint,
        options: ClaimOptions,
    ) -> Result<Option<Lease>, Error> {
        let now = self.clock.now();
        let mut records = self.records.lock();
        if records.map.get(scope).is_some_and(|r| r.expires_at > now) {
            return Ok(None);
        }
        acquire_fresh(
            &mut records,
            scope,
            fingerprint,
            options,
            now,
            self.max_records,
        )
        .map(Some)
    }
}

/// A fresh record for `scope` (absent or expired). Sweeps expired records every `len` inserts,
/// and refuses rather than forgets live records when full.
fn acquire_fresh(
    records: &mut Records,
    scope: &Scope,
    fingerprint: &Fingerprint,
    options: ClaimOptions,
    now: Timestamp,
    max_records: usize,
) -> Result<Lease, Error> {
    records.inserts_since_sweep += 1;
    if records.inserts_since_sweep >= records.map.len().max(64) {
        records.map.retain(|_, r| r.expires_at > now);
        records.inserts_since_sweep = 0;
    }
    if records.map.len() >= max_records && !records.map.contains_key(scope) {
        return Err(Error::store(
            format!("memory store full ({max_records} live records)"),
            true,
        ));
    }
    let fence = records.next_fence();
    records.map.insert(
        scope.clone(),
        Record {
            fingerprint: *fingerprint,
            state: State::InProgress {
                fence,
                lease_until: now + options.lease,
            },
            // Never expire while the lease is held.
            expires_at: now + options.ttl.max(options.lease),
        },
    );
    Ok(Lease {
        fence,
        resumed: false,
    })
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn claim(
        &self,
        scope: &Scope,
        fingerprint: &Fingerprint,
        options: ClaimOptions,
    ) -> Result<Claim, Error> {
        let now = self.clock.now();
        let mut records = self.records.lock();
        let live = records.map.get_mut(scope).filter(|r| r.expires_at > now);
        let Some(record) = live else {
            let lease = acquire_fresh(
                &mut records,
                scope,
                fingerprint,
                options,
                now,
                self.max_records,
            )?;
            return Ok(Claim::Acquired(lease));
        };
        if record.fingerprint != *fingerprint {
            return Ok(Claim::Mismatch);
        }
        let takeover =
            matches!(record.state, State::InProgress { lease_until, .. } if lease_until <= now);
        if takeover {
            // The owner's lease ran out (or it gave up ambiguously): take over.
            let fence = records.next_fence();
            if let Some(record) = records.map.get_mut(scope) {
                let lease_until = now + options.lease;
                record.state = State::InProgress { fence, lease_until };
                record.expires_at = record.expires_at.max(lease_until);
            }
            return Ok(Claim::Acquired(Lease {
                fence,
                resumed: true,
            }));
        }
        match &record.state {
            State::Completed(response) => Ok(Claim::Completed(response.clone())),
            State::InProgress { lease_until, .. } => Ok(Claim::InProgress {
                retry_after: lease_until.saturating_duration_since(now),
            }),
        }
    }

    async fn complete(
        &self,
        scope: &Scope,
        fence: u64,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), Error> {
        let now = self.clock.now();
        let mut records = self.records.lock();
        match records.map.get_mut(scope) {
            Some(record) if owns(record, fence, now) => {
                record.state = State::Completed(response.clone());
                record.expires_at = now + ttl;
                Ok(())
            }
            _ => Err(Error::Fenced),
        }
    }

    async fn release(&self, scope: &Scope, fence: u64, how: Release) -> Result<(), Error> {
        let now = self.clock.now();
        let mut records = self.records.lock();
        match records.map.get_mut(scope) {
            Some(record) if owns(record, fence, now) => {
                match how {
                    Release::NothingHappened => {
                        records.map.remove(scope);
                    }
                    Release::Ambiguous => {
                        record.state = State::InProgress {
                            fence,
                            lease_until: now,
                        };
                    }
                }
                Ok(())
            }
            _ => Err(Error::Fenced),
        }
    }

    async fn cleanup(&self, max: usize) -> Result<usize, Error> {
        let now = self.clock.now();
        let mut records = self.records.lock();
        let expired: Vec<Scope> = records
            .map
            .iter()
            .filter(|(_, r)| r.expires_at <= now)
            .map(|(s, _)| s.clone())
            .take(max)
            .collect();
        for scope in &expired {
            records.map.remove(scope);
        }
        Ok(expired.len())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

/// Whether `fence` is the current owner's: the record is in progress under that fence and has
/// not expired. (An expired lease still owns the record until someone takes it over: finishing
/// late is better than never, and a takeover bumps the fence.)
fn owns(record: &Record, fence: u64, now: Timestamp) -> bool {
    record.expires_at > now
        && matches!(record.state, State::InProgress { fence: f, .. } if f == fence)
}
