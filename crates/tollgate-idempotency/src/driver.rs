//! The driver: claim → run the handler once → complete, or replay, or wait for the request in
//! flight, or refuse.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, Sleeper, SystemClock, TokioSleeper};

use crate::fingerprint::Fingerprint;
use crate::poll::PollSchedule;
use crate::store::{Claim, ClaimOptions, IdempotencyStore, Lease, Release, StoredResponse};
use crate::telemetry::{self, Operation};
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
///
/// When the store fails the owner's last write — the completion, or the release of a request
/// that stored nothing — the request gets the store's error, and the same write is retried on
/// a task of its own (inside a Tokio runtime), every 0.1 s doubling to 1 s, until it lands, is
/// fenced off, or the lease would have ended anyway. A store that is back after a few seconds
/// thus frees the key within about a second, instead of holding it, with every retry refused
/// as in progress, for the rest of the lease.
#[derive(Debug)]
pub struct Idempotency<S> {
    store: Arc<S>,
    config: IdempotencyConfig,
    clock: Arc<dyn Clock>,
    sleeper: Arc<dyn Sleeper>,
    waiters: parking_lot::Mutex<std::collections::HashMap<Scope, Arc<tokio::sync::Notify>>>,
}

impl<S: IdempotencyStore + 'static> Idempotency<S> {
    /// A driver over `store`, on the system clock.
    pub fn new(store: S, config: IdempotencyConfig) -> Self {
        Idempotency {
            store: Arc::new(store),
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
            let claim = self.store.claim(scope, fingerprint, self.config.claim);
            let claim =
                match telemetry::observe(self.store.backend(), Operation::Claim, claim).await {
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
                let ttl = self.config.claim.ttl;
                let complete = self.store.complete(scope, lease.fence, &response, ttl);
                let written =
                    telemetry::observe(self.store.backend(), Operation::Complete, complete).await;
                // The response is copied only for a retry, never on the way that succeeds.
                self.retry_if_the_store_failed(written, scope, lease, || {
                    Ending::Complete(response.clone(), ttl)
                })?;
                Ok(Outcome::Executed(response))
            }
            HandlerResult::Forget(response) => {
                let how = Release::NothingHappened;
                let written = self.release(scope, lease, how).await;
                self.retry_if_the_store_failed(written, scope, lease, || Ending::Release(how))?;
                Ok(Outcome::Executed(response))
            }
            HandlerResult::Completed(response) => Ok(Outcome::Executed(response)),
            HandlerResult::Ambiguous(response) => {
                let how = Release::Ambiguous;
                let written = self.release(scope, lease, how).await;
                self.retry_if_the_store_failed(written, scope, lease, || Ending::Release(how))?;
                Ok(Outcome::Executed(response))
            }
        }
    }

    async fn release(&self, scope: &Scope, lease: Lease, how: Release) -> Result<(), Error> {
        let release = self.store.release(scope, lease.fence, how);
        telemetry::observe(self.store.backend(), Operation::Release, release).await
    }

    /// What completing or releasing the record gave. When the store failed, the caller gets the
    /// error (503: retry) and the same write is retried in the background until it lands, is
    /// fenced off, or the lease would have ended anyway: without it, an outage of a few seconds
    /// would hold the key for the whole lease, every retry answered `409` although nothing runs.
    fn retry_if_the_store_failed(
        &self,
        written: Result<(), Error>,
        scope: &Scope,
        lease: Lease,
        ending: impl FnOnce() -> Ending,
    ) -> Result<(), Error> {
        let error = match written {
            Ok(()) => return Ok(()),
            Err(error @ Error::Store { .. }) => error,
            Err(other) => return Err(other),
        };
        let ending = ending();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let retry = EndLater {
                store: Arc::clone(&self.store),
                clock: Arc::clone(&self.clock),
                sleeper: Arc::clone(&self.sleeper),
                scope: scope.clone(),
                fence: lease.fence,
                until: self.clock.now() + self.config.claim.lease,
            };
            runtime.spawn(retry.run(ending));
        }
        Err(error)
    }
}

/// How an owner ends its record.
#[derive(Debug)]
enum Ending {
    /// With a result to replay, kept for the TTL.
    Complete(StoredResponse, Duration),
    /// Without one.
    Release(Release),
}

impl Ending {
    async fn write<S: IdempotencyStore + ?Sized>(
        &self,
        store: &S,
        scope: &Scope,
        fence: u64,
    ) -> Result<(), Error> {
        match self {
            Ending::Complete(response, ttl) => store.complete(scope, fence, response, *ttl).await,
            Ending::Release(how) => store.release(scope, fence, *how).await,
        }
    }
}

/// An ending the store failed to take, retried in the background.
struct EndLater<S> {
    store: Arc<S>,
    clock: Arc<dyn Clock>,
    sleeper: Arc<dyn Sleeper>,
    scope: Scope,
    fence: u64,
    /// When the lease has ended whatever happens: past it the next claim takes the key over,
    /// and the write would be fenced off.
    until: crate::clock::Timestamp,
}

/// The first pause before a retried ending, doubled after each failure up to
/// [`END_RETRY_MAX`]: the key is free within about a second of the store's return.
const END_RETRY_FIRST: Duration = Duration::from_millis(100);
const END_RETRY_MAX: Duration = Duration::from_secs(1);

impl<S: IdempotencyStore + 'static> EndLater<S> {
    async fn run(self, ending: Ending) {
        let mut pause = END_RETRY_FIRST;
        loop {
            self.sleeper.sleep(pause).await;
            if self.clock.now() >= self.until {
                return;
            }
            match ending
                .write(self.store.as_ref(), &self.scope, self.fence)
                .await
            {
                Err(Error::Store { .. }) => pause = (pause * 2).min(END_RETRY_MAX),
                // Written, or fenced off: the record is no longer this owner's to end.
                Ok(()) | Err(_) => return,
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

    /// A memory store whose every call fails while `down` is set: an outage.
    #[derive(Debug)]
    struct Flaky {
        inner: MemoryStore,
        down: std::sync::atomic::AtomicBool,
    }

    impl Flaky {
        fn up(&self) -> Result<(), Error> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Error::store("the store is down", true));
            }
            Ok(())
        }

        fn set_down(&self, down: bool) {
            self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[async_trait::async_trait]
    impl IdempotencyStore for Flaky {
        async fn claim(
            &self,
            scope: &Scope,
            fingerprint: &Fingerprint,
            options: ClaimOptions,
        ) -> Result<Claim, Error> {
            self.up()?;
            self.inner.claim(scope, fingerprint, options).await
        }

        async fn complete(
            &self,
            scope: &Scope,
            fence: u64,
            response: &StoredResponse,
            ttl: Duration,
        ) -> Result<(), Error> {
            self.up()?;
            self.inner.complete(scope, fence, response, ttl).await
        }

        async fn release(&self, scope: &Scope, fence: u64, how: Release) -> Result<(), Error> {
            self.up()?;
            self.inner.release(scope, fence, how).await
        }

        async fn cleanup(&self, max: usize) -> Result<usize, Error> {
            self.inner.cleanup(max).await
        }
    }

    /// The store goes down while the handler runs, so the owner cannot end its record: the
    /// request is answered with the store's error, and the record is ended within about a
    /// second of the store's return — not held for the rest of the lease.
    #[tokio::test(start_paused = true)]
    async fn an_ending_the_store_missed_lands_once_it_is_back() {
        let response = StoredResponse {
            status: 201,
            headers: vec![],
            body: Bytes::from_static(b"paid"),
        };
        let endings = [
            HandlerResult::Ambiguous(response.clone()),
            HandlerResult::Store(response.clone()),
            HandlerResult::Forget(response.clone()),
        ];
        for (n, ending) in endings.into_iter().enumerate() {
            let store = Flaky {
                inner: MemoryStore::new(10),
                down: std::sync::atomic::AtomicBool::new(false),
            };
            let driver = Idempotency::new(store, IdempotencyConfig::default());
            let key = IdempotencyKey::parse(&format!("order-7c1f0e9a2b4d4e1{n}")).expect("a key");
            let scope = Scope::new("alice", &Method::POST, "/pay", key);
            let fingerprint = Fingerprint::of_bytes(&Method::POST, "/pay", b"{}");
            let answered = driver
                .run(&scope, &fingerprint, |_| async {
                    driver.store().set_down(true);
                    ending.clone()
                })
                .await;
            assert!(matches!(answered, Err(Error::Store { .. })), "{answered:?}");
            tokio::time::sleep(Duration::from_secs(3)).await;
            driver.store().set_down(false);
            let options = driver.config().claim;
            let held = driver
                .store()
                .inner
                .claim(&scope, &fingerprint, options)
                .await;
            assert!(
                matches!(held, Ok(Claim::InProgress { .. })),
                "{ending:?}: held until the store is back: {held:?}"
            );
            tokio::time::sleep(Duration::from_millis(1_100)).await;
            let after = driver.store().claim(&scope, &fingerprint, options).await;
            match (&ending, after) {
                (HandlerResult::Ambiguous(_), Ok(Claim::Acquired(lease))) => {
                    assert!(lease.resumed, "the next owner reconciles");
                }
                (HandlerResult::Store(_), Ok(Claim::Completed(stored))) => {
                    assert_eq!(stored, response);
                }
                (HandlerResult::Forget(_), Ok(Claim::Acquired(lease))) => {
                    assert!(!lease.resumed, "nothing happened: a fresh start");
                }
                (ending, after) => panic!("{ending:?} ended as {after:?}"),
            }
        }
    }

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
