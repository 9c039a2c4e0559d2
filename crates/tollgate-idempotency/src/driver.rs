//! The driver: claim → run the handler once → complete, or replay, or wait for the request in
//! flight, or refuse.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tollgate_retry::backoff::{Backoff, Jitter};
use tollgate_retry::clock::{Clock, Sleeper, SystemClock, TokioSleeper};

use crate::fingerprint::Fingerprint;
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

/// Settings of the driver.
#[derive(Clone, Copy, Debug)]
pub struct IdempotencyConfig {
    /// Lease and retention of records.
    pub claim: ClaimOptions,
    /// How long a duplicate waits for the request in flight before `409`.
    pub wait: Duration,
    /// Polling schedule while waiting (capped exponential, full jitter: no busy spin).
    pub poll: Backoff,
}

impl Default for IdempotencyConfig {
    /// 30 s lease, 24 h retention, 5 s wait polled every 10–250 ms.
    fn default() -> Self {
        IdempotencyConfig {
            claim: ClaimOptions::default(),
            wait: Duration::from_secs(5),
            poll: Backoff::exponential(Duration::from_millis(10), Duration::from_millis(250))
                .jitter(Jitter::Full),
        }
    }
}

/// Runs handlers at most once per idempotency scope, on any [`IdempotencyStore`].
#[derive(Debug)]
pub struct Idempotency<S> {
    store: S,
    config: IdempotencyConfig,
    clock: Arc<dyn Clock>,
    sleeper: Arc<dyn Sleeper>,
}

impl<S: IdempotencyStore> Idempotency<S> {
    /// A driver over `store`, on the system clock.
    pub fn new(store: S, config: IdempotencyConfig) -> Self {
        Idempotency {
            store,
            config,
            clock: Arc::new(SystemClock),
            sleeper: Arc::new(TokioSleeper),
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
        loop {
            match self
                .store
                .claim(scope, fingerprint, self.config.claim)
                .await?
            {
                Claim::Acquired(lease) => return self.execute(scope, lease, handler).await,
                Claim::Completed(response) => return Ok(Outcome::Replayed(response)),
                Claim::Mismatch => return Err(Error::Mismatch),
                Claim::InProgress { retry_after } => {
                    let now = self.clock.now();
                    if now >= deadline {
                        return Err(Error::Conflict { retry_after });
                    }
                    let pause = polls
                        .next()
                        .unwrap_or(retry_after)
                        .min(deadline - now)
                        .min(retry_after)
                        .max(Duration::from_millis(1));
                    self.sleeper.sleep(pause).await;
                }
            }
        }
    }

    async fn execute<F, Fut>(
        &self,
        scope: &Scope,
        lease: Lease,
        handler: F,
    ) -> Result<Outcome, Error>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: Future<Output = HandlerResult>,
    {
        match handler(lease).await {
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
