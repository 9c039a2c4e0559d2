//! The driver: claim → run the handler once → complete, or replay, or wait for the request in
//! flight, or refuse.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, Sleeper, SystemClock, TokioSleeper};

use crate::fingerprint::Fingerprint;
use crate::poll::PollSchedule;
use crate::store::{Claim, ClaimOptions, IdempotencyStore, Lease, Release, StoredResponse};
use crate::{Error, Scope};

/// What the handler decided to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandlerResult {
    /// A terminal outcome (2xx, or a business 4xx such as a declined card): stored and replayed.
    Store(StoredResponse),
    /// Refused before any side effect (validation, a closed circuit): answered, not stored, and
    /// the key is free again.
    Forget(StoredResponse),
    /// Failed after the side effect may have started (a processor timeout): answered, the record
    /// is kept, and the next request with the key resumes it rather than starting over.
    Ambiguous(StoredResponse),
    /// The handler already completed the record itself, inside its own transaction (for example
    /// with `PostgresStore::complete_in`, so the stored response commits with the business rows):
    /// the driver answers with it and writes nothing.
    Completed(StoredResponse),
}

/// How the request was answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The handler ran for this request (send `Idempotent-Replayed: false`).
    Executed(StoredResponse),
    /// A stored result was replayed (send `Idempotent-Replayed: true`).
    Replayed(StoredResponse),
}

/// Settings of the driver: start from the default and change what you need
/// (`IdempotencyConfig::default().wait(Duration::from_secs(2))`); new settings can come
/// without breaking your code.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct IdempotencyConfig {
    /// Lease and retention of records.
    pub claim: ClaimOptions,
    /// How long a duplicate waits for the request in flight before `409`.
    pub wait: Duration,
    /// Polling schedule while waiting (capped exponential, full jitter: no busy spin).
    pub poll: PollSchedule,
}

impl IdempotencyConfig {
    /// Lease and retention of records.
    pub fn claim(mut self, claim: ClaimOptions) -> Self {
        self.claim = claim;
        self
    }

    /// How long a duplicate waits for the request in flight before `409`.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Polling schedule while waiting.
    pub fn poll(mut self, poll: PollSchedule) -> Self {
        self.poll = poll;
        self
    }
}

impl Default for IdempotencyConfig {
    /// 30 s lease, 24 h retention, 5 s wait polled every 10–250 ms.
    fn default() -> Self {
        IdempotencyConfig {
            claim: ClaimOptions::default(),
            wait: Duration::from_secs(5),
            poll: PollSchedule::default(),
        }
    }
}

/// Runs handlers at most once per idempotency scope, on any [`IdempotencyStore`].
///
/// A duplicate that finds its scope in progress polls the store (capped, jittered), so it
/// learns of an owner in another process; an owner in this process also wakes it the moment it
/// finishes, so same-process duplicates do not wait out a polling interval.
#[derive(Debug)]
pub struct Idempotency<S> {
    store: S,
    config: IdempotencyConfig,
    clock: Arc<dyn Clock>,
    sleeper: Arc<dyn Sleeper>,
    waiters: parking_lot::Mutex<std::collections::HashMap<Scope, Arc<tokio::sync::Notify>>>,
}

impl<S: IdempotencyStore> Idempotency<S> {
    /// A driver over `store`, on the system clock.
    pub fn new(store: S, config: IdempotencyConfig) -> Self {
        Idempotency {
            store,
            config,
            clock: Arc::new(SystemClock::new()),
            sleeper: Arc::new(TokioSleeper),
            waiters: parking_lot::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The wake-up of `scope`'s waiters in this process.
    fn waiter(&self, scope: &Scope) -> Arc<tokio::sync::Notify> {
        Arc::clone(self.waiters.lock().entry(scope.clone()).or_default())
    }

    /// Drops `scope`'s wake-up if nobody else holds it (its owner is in another process).
    fn forget_waiter(&self, scope: &Scope, notify: Arc<tokio::sync::Notify>) {
        let mut waiters = self.waiters.lock();
        // Held by the map and by `notify`: no other waiter.
        if Arc::strong_count(&notify) <= 2 {
            waiters.remove(scope);
        }
    }

    /// Wakes this process's waiters of `scope`: its owner finished.
    fn wake(&self, scope: &Scope) {
        if let Some(notify) = self.waiters.lock().remove(scope) {
            notify.notify_waiters();
        }
    }

    /// The clock and sleeper used while waiting (tests use a manual clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>, sleeper: Arc<dyn Sleeper>) -> Self {
        self.clock = clock;
        self.sleeper = sleeper;
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Answers a request: runs `handler` if this request owns the scope (once, given the lease),
    /// replays a stored result, waits for a duplicate in flight up to the configured bound, or
    /// fails with [`Error::Mismatch`] (422), [`Error::Conflict`] (409) or a store error.
    pub async fn run<F, Fut>(
        &self,
        scope: &Scope,
        fingerprint: &Fingerprint,
        handler: F,
    ) -> Result<Outcome, Error>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: Future<Output = HandlerResult>,
    {
        let deadline = self.clock.now() + self.config.wait;
        // Per-call randomness, so duplicates do not poll in lock step.
        let mut polls = self.config.poll.delays(fastrand::u64(..));
        let mut waiting: Option<Arc<tokio::sync::Notify>> = None;
        let outcome = loop {
            let claim = match self
                .store
                .claim(scope, fingerprint, self.config.claim)
                .await
            {
                Ok(claim) => claim,
                Err(error) => break Err(error),
            };
            match claim {
                Claim::Acquired(lease) => {
                    if let Some(notify) = waiting.take() {
                        self.forget_waiter(scope, notify);
                    }
                    return self.run_claimed(scope, lease, handler).await;
                }
                Claim::Completed(response) => break Ok(Outcome::Replayed(response)),
                Claim::Mismatch => break Err(Error::Mismatch),
                Claim::InProgress { retry_after } => {
                    let now = self.clock.now();
                    if now >= deadline {
                        // When to ask again: owners usually finish in well under a lease, so
                        // another wait's worth, and never past the moment the lease ends (the
                        // key can then be taken over).
                        let hint = retry_after.min(self.config.wait.max(Duration::from_secs(1)));
                        break Err(Error::Conflict { retry_after: hint });
                    }
                    let pause = polls
                        .next()
                        .unwrap_or(retry_after)
                        .min(deadline - now)
                        .min(retry_after)
                        .max(Duration::from_millis(1));
                    let notify = waiting.get_or_insert_with(|| self.waiter(scope));
                    // Whichever comes first: the owner here finishing, or the next poll.
                    tokio::select! {
                        () = notify.notified() => {}
                        () = self.sleeper.sleep(pause) => {}
                    }
                }
            }
        };
        if let Some(notify) = waiting {
            self.forget_waiter(scope, notify);
        }
        outcome
    }

    /// The settings.
    pub fn config(&self) -> &IdempotencyConfig {
        &self.config
    }

    /// Runs `handler` under a lease the caller acquired itself — a fresh claim written in the
    /// same statement as its own first write (see `PostgresStore::claim_statement`) — then
    /// completes or releases the record as [`run`](Self::run) does.
    pub async fn run_claimed<F, Fut>(
        &self,
        scope: &Scope,
        lease: Lease,
        handler: F,
    ) -> Result<Outcome, Error>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: Future<Output = HandlerResult>,
    {
        let outcome = self.finish(scope, lease, handler(lease).await).await;
        self.wake(scope);
        outcome
    }

    async fn finish(
        &self,
        scope: &Scope,
        lease: Lease,
        result: HandlerResult,
    ) -> Result<Outcome, Error> {
        match result {
            HandlerResult::Store(response) => {
                self.store
                    .complete(scope, lease.fence, &response, self.config.claim.ttl)
                    .await?;
                Ok(Outcome::Executed(response))
            }
            HandlerResult::Forget(response) => {
                self.store
                    .release(scope, lease.fence, Release::NothingHappened)
                    .await?;
                Ok(Outcome::Executed(response))
            }
            HandlerResult::Completed(response) => Ok(Outcome::Executed(response)),
            HandlerResult::Ambiguous(response) => {
                self.store
                    .release(scope, lease.fence, Release::Ambiguous)
                    .await?;
                Ok(Outcome::Executed(response))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IdempotencyKey;
    use crate::memory::MemoryStore;
    use bytes::Bytes;
    use http::Method;

    /// A duplicate in the same process is woken when the owner finishes, not at its next poll.
    #[tokio::test(start_paused = true)]
    async fn a_local_duplicate_is_woken_when_the_owner_finishes() {
        let config = IdempotencyConfig {
            wait: Duration::from_secs(30),
            // Polls far apart: only the wake-up can answer the duplicate early.
            poll: PollSchedule::constant(Duration::from_secs(10)),
            ..IdempotencyConfig::default()
        };
        let driver = Arc::new(Idempotency::new(MemoryStore::new(10), config));
        let key = IdempotencyKey::parse("order-7c1f0e9a2b4d4e11").expect("a key");
        let scope = Scope::new("alice", &Method::POST, "/pay", key);
        let fingerprint = Fingerprint::of_bytes(&Method::POST, "/pay", b"{}");
        let started = tokio::time::Instant::now();
        let owner = {
            let (driver, scope) = (Arc::clone(&driver), scope.clone());
            tokio::spawn(async move {
                driver
                    .run(&scope, &fingerprint, |_| async {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        HandlerResult::Store(StoredResponse {
                            status: 201,
                            headers: vec![],
                            body: Bytes::from_static(b"paid"),
                        })
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        let duplicate = driver
            .run(&scope, &fingerprint, |_| async {
                unreachable!("the owner runs the handler")
            })
            .await;
        assert!(
            matches!(duplicate, Ok(Outcome::Replayed(_))),
            "{duplicate:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(owner.await, Ok(Ok(Outcome::Executed(_)))));
        assert!(driver.waiters.lock().is_empty(), "no wake-up left behind");
    }

    /// A duplicate that gave up waiting is told to come back after another wait's worth, not
    /// when the owner's lease would end (owners usually finish long before).
    #[tokio::test]
    async fn a_conflict_asks_for_another_wait_not_the_whole_lease() {
        let clock = crate::clock::ManualClock::new();
        let config = IdempotencyConfig {
            wait: Duration::from_secs(2),
            ..IdempotencyConfig::default()
        };
        let store = MemoryStore::with_clock(10, Arc::new(clock.clone()));
        let driver = Arc::new(
            Idempotency::new(store, config).with_clock(Arc::new(clock.clone()), Arc::new(clock)),
        );
        let key = IdempotencyKey::parse("order-7c1f0e9a2b4d4e11").expect("a key");
        let scope = Scope::new("alice", &Method::POST, "/pay", key);
        let fingerprint = Fingerprint::of_bytes(&Method::POST, "/pay", b"{}");
        let owner = {
            let (driver, scope) = (Arc::clone(&driver), scope.clone());
            tokio::spawn(async move {
                driver
                    .run(&scope, &fingerprint, |_| std::future::pending())
                    .await
            })
        };
        tokio::task::yield_now().await;
        let refused = driver
            .run(&scope, &fingerprint, |_| async {
                unreachable!("the owner runs the handler")
            })
            .await;
        assert!(IdempotencyConfig::default().claim.lease > Duration::from_secs(10));
        assert!(
            matches!(refused, Err(Error::Conflict { retry_after }) if retry_after == Duration::from_secs(2)),
            "{refused:?}"
        );
        owner.abort();
    }
}
