//! The Redis store: one Lua compare-and-set script per operation, on the server's clock.
//!
//! Each record is one hash under `{prefix}{idem:<hash of user, operation, key>}` (a hash tag of
//! its own, so a cluster never sees a cross-slot script). `PX` expiry deletes records after their
//! TTL, so [`cleanup`](IdempotencyStore::cleanup) has nothing to do; an expired record reads as
//! absent even before Redis deletes it. Redis may lose recent writes when it restarts (how much
//! depends on its persistence settings); where a replay must survive that, use the PostgreSQL
//! store, which commits each record.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tollgate_idempotency::redis::{deadpool_redis, RedisStore};
//!
//! let pool = deadpool_redis::Config::from_url("redis://127.0.0.1:6379")
//!     .create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
//! let store = RedisStore::new(pool, "myapp:idem:");
//! # Ok(())
//! # }
//! ```
//!
//! On a Redis Cluster (feature `cluster`), over a cluster connection; each record lives on the
//! primary of its slot:
//!
//! ```no_run
//! # #[cfg(feature = "cluster")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tollgate_idempotency::redis::{RedisStore, redis};
//!
//! let nodes = ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"];
//! let cluster = redis::cluster::ClusterClient::new(nodes)?.get_async_connection().await?;
//! let store = RedisStore::new(cluster, "myapp:idem:");
//! # Ok(())
//! # }
//! ```
//!
//! A cluster's failover loses the writes its failed primary acknowledged but had not yet
//! replicated (replication is asynchronous): a claim or a completion of the last few
//! milliseconds may be gone, and a retry of that key then runs again. Where that matters, keep
//! the records in PostgreSQL.

mod scripts;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, Timestamp};
use async_trait::async_trait;
use bytes::Bytes;

/// The pool crate this store takes, re-exported so callers build pools of the same version.
pub use deadpool_redis;
/// The Redis client crate, re-exported so callers build cluster connections of the same version.
pub use redis;
pub use tollgate_backend::redis::RedisConnection;

use crate::fingerprint::Fingerprint;
use crate::store::{Claim, ClaimOptions, IdempotencyStore, Lease, Release, StoredResponse};
use crate::{Error, Scope};

/// Idempotency records in Redis.
pub struct RedisStore {
    connection: RedisConnection,
    prefix: String,
    claim: redis::Script,
    complete: redis::Script,
    release: redis::Script,
    /// Tests only: (clock, its instant at creation, wall µs at creation).
    time: Option<(Arc<dyn Clock>, Timestamp, u64)>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("connection", &self.connection)
            .field("prefix", &self.prefix)
            .field("injected_time", &self.time.is_some())
            .finish_non_exhaustive()
    }
}

/// A script that starts by reading the time (see `scripts::NOW`).
fn with_now(body: &str) -> redis::Script {
    redis::Script::new(&format!("{}{body}", scripts::NOW))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl RedisStore {
    /// A store over a [`RedisConnection`] (a pool, a multiplexed `ConnectionManager`, or with
    /// feature `cluster` a Redis Cluster connection), keys starting with `prefix`.
    pub fn new(connection: impl Into<RedisConnection>, prefix: impl Into<String>) -> Self {
        RedisStore {
            connection: connection.into(),
            prefix: prefix.into(),
            claim: with_now(scripts::CLAIM),
            complete: with_now(scripts::COMPLETE),
            release: with_now(scripts::RELEASE),
            time: None,
        }
    }

    /// Decide on `clock` instead of the Redis server's `TIME` (deterministic tests only).
    ///
    /// Redis still deletes records on its own clock, so with an injected clock each record is
    /// kept a minute past its expiry: a clock that stands still between two calls must not see
    /// a record vanish. Its expiry instant still decides when it reads as absent.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.time = Some((Arc::clone(&clock), clock.now(), wall));
        self
    }

    /// The Redis key of `scope`.
    pub fn redis_key(&self, scope: &Scope) -> String {
        let mut hasher = blake3::Hasher::new();
        for part in [scope.user(), scope.operation(), scope.key().as_str()] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        let hash = hasher.finalize().to_hex();
        format!("{}{{idem:{}}}", self.prefix, &hash[..32])
    }

    fn now_arg(&self) -> String {
        self.time
            .as_ref()
            .map_or_else(String::new, |(clock, origin, wall)| {
                let elapsed =
                    u64::try_from(clock.now().saturating_duration_since(*origin).as_micros())
                        .unwrap_or(0);
                (wall + elapsed).to_string()
            })
    }
}

fn as_u64(value: Option<&redis::Value>) -> u64 {
    match value {
        Some(redis::Value::Int(i)) => u64::try_from(*i).unwrap_or(0),
        _ => 0,
    }
}

fn as_bytes(value: Option<&redis::Value>) -> Vec<u8> {
    match value {
        Some(redis::Value::BulkString(bytes)) => bytes.clone(),
        _ => Vec::new(),
    }
}

#[async_trait]
impl IdempotencyStore for RedisStore {
    async fn claim(
        &self,
        scope: &Scope,
        fingerprint: &Fingerprint,
        options: ClaimOptions,
    ) -> Result<Claim, Error> {
        let mut claim = self.claim.prepare_invoke();
        claim
            .key(self.redis_key(scope))
            .arg(fingerprint.to_string())
            .arg(millis(options.lease))
            .arg(millis(options.ttl))
            .arg(self.now_arg());
        let reply: Vec<redis::Value> = self
            .connection
            .invoke(&claim)
            .await
            .map_err(Error::from_backend)?;
        let outcome = String::from_utf8(as_bytes(reply.first())).unwrap_or_default();
        Ok(match outcome.as_str() {
            "acquired" => Claim::Acquired(Lease {
                fence: as_u64(reply.get(1)),
                resumed: false,
            }),
            "resumed" => Claim::Acquired(Lease {
                fence: as_u64(reply.get(1)),
                resumed: true,
            }),
            "mismatch" => Claim::Mismatch,
            "in_progress" => Claim::InProgress {
                retry_after: Duration::from_millis(as_u64(reply.get(2))),
            },
            "completed" => {
                let headers: Vec<(String, String)> =
                    serde_json::from_slice(&as_bytes(reply.get(3)))
                        .map_err(|e| Error::store(e, false))?;
                Claim::Completed(StoredResponse {
                    status: u16::try_from(as_u64(reply.get(2))).unwrap_or(500),
                    headers,
                    body: Bytes::from(as_bytes(reply.get(4))),
                })
            }
            other => {
                return Err(Error::store(
                    format!("unexpected claim outcome {other:?}"),
                    false,
                ));
            }
        })
    }

    async fn complete(
        &self,
        scope: &Scope,
        fence: u64,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), Error> {
        let headers =
            serde_json::to_string(&response.headers).map_err(|e| Error::store(e, false))?;
        let mut complete = self.complete.prepare_invoke();
        complete
            .key(self.redis_key(scope))
            .arg(fence)
            .arg(response.status)
            .arg(headers)
            .arg(response.body.as_ref())
            .arg(millis(ttl))
            .arg(self.now_arg());
        let done: i64 = self
            .connection
            .invoke(&complete)
            .await
            .map_err(Error::from_backend)?;
        if done == 1 {
            Ok(())
        } else {
            Err(Error::Fenced)
        }
    }

    async fn release(&self, scope: &Scope, fence: u64, how: Release) -> Result<(), Error> {
        let mode = match how {
            Release::NothingHappened => "0",
            Release::Ambiguous => "1",
        };
        let mut release = self.release.prepare_invoke();
        release
            .key(self.redis_key(scope))
            .arg(fence)
            .arg(mode)
            .arg(self.now_arg());
        let done: i64 = self
            .connection
            .invoke(&release)
            .await
            .map_err(Error::from_backend)?;
        if done == 1 {
            Ok(())
        } else {
            Err(Error::Fenced)
        }
    }

    /// Redis deletes expired records itself (`PX`); nothing to do.
    async fn cleanup(&self, _max: usize) -> Result<usize, Error> {
        Ok(0)
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
