//! [`Server`]: the state built from the configuration — pools, the limiter, the stores, the
//! ledger and the processor — and what shutting down needs.

use std::sync::Arc;
use std::time::Duration;

use tollgate_audit::postgres::{AuditLogConfig, PostgresAuditLog};
use tollgate_audit::{AuditLog, MemoryAuditLog};
use tollgate_idempotency::memory::MemoryStore;
use tollgate_idempotency::postgres::PostgresStore;
use tollgate_idempotency::redis::RedisStore;
use tollgate_idempotency::store::IdempotencyStore;
use tollgate_ratelimit::denials::DenialCache;
use tollgate_ratelimit::redis::{FailureMode, RedisLimiter};
use tollgate_ratelimit::{DynRateLimiter, MemoryLimiter};

use crate::config::{ApiKey, Config, FailureModeName, FileConfig, Timeouts};
use crate::health::{RememberedDenials, Services};
use crate::keys::KeyStore;
use crate::ledger::{BoxError, Ledger, MemoryLedger, PostgresLedger};
use crate::metrics::BackendLatency;
use crate::payment::IntentStore;
use crate::pools;
use crate::processor::{HttpProcessor, SimulatedProcessor};
use crate::start_error::{StartError, backend};
use crate::state::{AppState, Backends};
use crate::timed::{TimedLimiter, TimedStore};

/// Idempotency records kept in memory at most (the oldest expire first).
const MEMORY_IDEMPOTENCY_RECORDS: usize = 1_000_000;

impl AppState {
    /// Everything in this process's memory: no services needed (development and tests).
    pub fn in_memory(file: &FileConfig, keys: &[ApiKey]) -> Result<Arc<Self>, String> {
        AppState::new(file, keys, in_memory(file))
    }
}

/// The built server: its state, its timeouts, and what shutting down flushes.
#[derive(Debug)]
pub struct Server {
    /// Serve it with [`app`](crate::app).
    pub state: Arc<AppState>,
    /// The connection and request deadlines.
    pub timeouts: Timeouts,
    /// What one client may hold of the server.
    pub limits: crate::serve::ConnectionLimits,
    store: Arc<dyn IdempotencyStore>,
    cleanup_interval: Duration,
    audit: Option<Arc<PostgresAuditLog>>,
    /// Where managed keys are kept, and the version of them in force.
    keys: Option<(Arc<KeyStore>, String)>,
}

impl Server {
    /// Reads the configuration and connects to, and migrates, the backends it names.
    pub async fn build(config: &Config) -> Result<Self, StartError> {
        let (keys, development) = config.keys().map_err(StartError::Invalid)?;
        if development {
            tracing::warn!(
                "no API_KEYS or API_KEY set: development mode, accepting the key `{}` as user `test`",
                crate::config::DEV_KEY
            );
        }
        let file = config.file().map_err(StartError::Invalid)?;
        let redis = pools::redis(config, &file.redis).await?;
        let latency = BackendLatency::new(file.telemetry.backend_spans);
        let (limiter, redis_limiter, denials) =
            limiter(config, &file, redis.as_ref(), &latency).await?;
        let database = pools::postgres(config, &file.database)?;
        let services = Services {
            // Without a database the idempotency records live in Redis; and a limiter that
            // refuses or fails without Redis cannot serve without it either.
            redis_required: redis_limiter.is_some()
                && (database.is_none()
                    || matches!(
                        file.rate_limit.failure_mode,
                        FailureModeName::FailClosed | FailureModeName::Error
                    )),
            redis: redis_limiter,
            denials,
            redis_pool: redis.as_ref().and_then(pools::redis_pool).cloned(),
            ..Services::default()
        };
        let (backends, audit) = match database {
            Some(pool) => postgres(config, &file, pool, (limiter, services), &latency).await?,
            None => {
                let store = redis_or_memory_store(config, redis.as_ref());
                (memory(&file, store, limiter, services, &latency), None)
            }
        };
        tracing::info!(
            rate_limits = redis.as_ref().map_or("memory", pools::describe),
            storage = if audit.is_some() {
                "postgresql"
            } else if redis.is_some() {
                "memory (idempotency records in redis)"
            } else {
                "memory"
            },
            "backends ready"
        );
        let mut backends = backends;
        if let Some(url) = &config.processor_url {
            let processor =
                HttpProcessor::new(url, &file.processor, config.processor_ca_file.as_deref())
                    .map_err(StartError::Invalid)?;
            tracing::info!(url, "charging through the processor over HTTP");
            backends.processor = Arc::new(processor);
        }
        let store = Arc::clone(&backends.store);
        let state = AppState::new(&file, &keys, backends).map_err(StartError::Invalid)?;
        let limits = crate::serve::ConnectionLimits::from_config(
            &file.limits,
            Arc::clone(&state.addresses.0),
        );
        let keys = managed_keys(config, &file, &state).await?;
        // One probe before serving: `backend_up` is in the first scrape, not only after the
        // first health check.
        state.health.report(&state.services).await;
        Ok(Server {
            keys,
            state,
            timeouts: file.timeouts,
            limits,
            store,
            cleanup_interval: file.idempotency.cleanup_interval,
            audit,
        })
    }

    /// Starts what runs beside the requests: the idempotency cleanup, and the writing of each
    /// refusal window's count to the audit trail when the window ends.
    pub fn spawn_tasks(&self) {
        self.spawn_cleanup();
        if let Some((store, version)) = &self.keys {
            let (state, store) = (Arc::clone(&self.state), Arc::clone(store));
            tokio::spawn(crate::keys::watch::watch(state, store, version.clone()));
        }
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                for summary in state.audit.refusals.due() {
                    state.audit.record(summary).await;
                }
                if let Some(summary) = state.stranger_log.due() {
                    summary.log();
                }
            }
        });
    }

    /// Deletes expired idempotency records every `idempotency.cleanup_interval`, in batches of
    /// 1 000 until none is left: the table stays near TTL × payment rate however high the rate.
    fn spawn_cleanup(&self) {
        let store = Arc::clone(&self.store);
        let interval = self.cleanup_interval;
        tokio::spawn(async move {
            let mut every = tokio::time::interval(interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let deleted = cleanup(store.as_ref()).await;
                if deleted > 0 {
                    tracing::debug!(deleted, "expired idempotency records deleted");
                }
            }
        });
    }

    /// Writes the open refusal windows' counts and every audit event accepted so far (the
    /// PostgreSQL sink's queue).
    pub async fn shutdown(self) {
        for summary in self.state.audit.refusals.drain() {
            self.state.audit.record(summary).await;
        }
        if let Some(audit) = self.audit {
            match audit.shutdown().await {
                Ok(()) => tracing::info!("audit trail flushed"),
                Err(error) => {
                    tracing::error!(error = %crate::error_chain(&error), "audit trail not fully flushed")
                }
            }
        }
    }
}

/// The key store (PostgreSQL when there is a database, else `KEYS_FILE`), its keys put in
/// force in `state`.
async fn managed_keys(
    config: &Config,
    file: &FileConfig,
    state: &AppState,
) -> Result<Option<(Arc<KeyStore>, String)>, StartError> {
    let (store, setting) = match (&state.services.database_pool, &config.keys_file) {
        (Some(pool), _) => {
            let mode = file.database.statement_mode();
            let store = KeyStore::postgres(pool.clone(), &config.database_schema, mode);
            (store, "DATABASE_URL")
        }
        (None, Some(path)) => (KeyStore::file(path.clone()), "KEYS_FILE"),
        (None, None) => return Ok(None),
    };
    let version = crate::keys::watch::load(state, &store)
        .await
        .map_err(|e| backend(setting)(e.into()))?;
    Ok(Some((Arc::new(store), version)))
}

/// Records deleted per statement: a batch short enough not to hold locks for long.
const CLEANUP_BATCH: usize = 1_000;

/// Deletes expired records batch after batch until a batch comes back short; how many.
async fn cleanup(store: &dyn IdempotencyStore) -> usize {
    let mut deleted = 0;
    loop {
        match store.cleanup(CLEANUP_BATCH).await {
            Ok(n) => {
                deleted += n;
                if n < CLEANUP_BATCH {
                    return deleted;
                }
            }
            Err(error) => {
                tracing::warn!(error = %crate::error_chain(&error), "idempotency cleanup failed");
                return deleted;
            }
        }
    }
}

/// The limiter every request goes through, the Redis limiter behind it (for health and
/// metrics), and the denials remembered in front of that (unless turned off).
type RateLimiters = (
    Arc<dyn DynRateLimiter>,
    Option<RedisLimiter>,
    Option<Arc<RememberedDenials>>,
);

/// Rate limits: Redis if configured, shared by every process; memory otherwise.
async fn limiter(
    config: &Config,
    file: &FileConfig,
    redis: Option<&pools::Redis>,
    latency: &BackendLatency,
) -> Result<RateLimiters, StartError> {
    let Some(redis) = redis else {
        return Ok((Arc::new(MemoryLimiter::new()), None, None));
    };
    let mode = match file.rate_limit.failure_mode {
        FailureModeName::FailOpen => FailureMode::FailOpen,
        FailureModeName::FailClosed => FailureMode::FailClosed {
            retry_after: Duration::from_secs(1),
        },
        FailureModeName::LocalFallback => FailureMode::LocalFallback,
        FailureModeName::Error => FailureMode::ReturnError,
    };
    let limiter = RedisLimiter::builder(redis.clone())
        .key_prefix(crate::reset::key_prefix(config))
        .failure_mode(mode)
        .timeout(file.rate_limit.redis_timeout)
        .build();
    limiter
        .ping()
        .await
        .map_err(|e| backend(pools::setting(redis))(e.into()))?;
    let timed = TimedLimiter::new(limiter.clone(), "redis", latency);
    let remembered = file.rate_limit.remembered_denials;
    if remembered == 0 {
        return Ok((Arc::new(timed), Some(limiter), None));
    }
    // Outside the timer: a denial answered from memory is not a Redis call.
    let cached = DenialCache::builder(timed)
        .max_entries(remembered)
        .max_memory(crate::reset::REMEMBER_DENIALS_AT_MOST);
    let cached = Arc::new(cached.build());
    Ok((Arc::clone(&cached) as _, Some(limiter), Some(cached)))
}

/// Payments, idempotency records and the audit trail in PostgreSQL, the source of truth.
async fn postgres(
    config: &Config,
    file: &FileConfig,
    pool: deadpool_postgres::Pool,
    (limiter, mut services): (Arc<dyn DynRateLimiter>, Services),
    latency: &BackendLatency,
) -> Result<(Backends, Option<Arc<PostgresAuditLog>>), StartError> {
    let schema = config.database_schema.as_str();
    let database = backend("DATABASE_URL");
    (crate::migrate::prepare(&pool, schema, file.database.migrate).await).map_err(database)?;
    let mode = file.database.statement_mode();
    let opened = (|| -> Result<_, BoxError> {
        let store = PostgresStore::open(pool.clone(), schema)?.statement_mode(mode);
        let audit_config = AuditLogConfig::default()
            .schema(schema)
            .statement_mode(mode);
        let audit = Arc::new(PostgresAuditLog::open(pool.clone(), audit_config)?);
        Ok((Arc::new(store), audit))
    })();
    let (store, audit) = opened.map_err(backend("DATABASE_URL"))?;
    let postgres_ledger = PostgresLedger::new(
        pool.clone(),
        schema,
        Arc::clone(&store),
        &audit,
        latency,
        (mode, file.database.group_commit()),
    );
    let postgres_ledger = Arc::new(postgres_ledger.map_err(backend("DATABASE_URL"))?);
    let ledger: Arc<dyn Ledger> = postgres_ledger.clone();
    services.database = Some(Arc::clone(&ledger));
    services.database_pool = Some(pool.clone());
    services.audit_writer = Some(Arc::clone(&audit));
    let backends = Backends {
        limiter,
        store: Arc::new(TimedStore::new(store, "postgres", latency)),
        ledger,
        audit: audit.clone(),
        processor: Arc::new(SimulatedProcessor::new(
            file.processor,
            file.testing.payment_methods,
        )),
        intents: Some(IntentStore::Postgres(postgres_ledger)),
        latency: latency.clone(),
        services,
    };
    Ok((backends, Some(audit)))
}

/// Every backend in memory.
pub(crate) fn in_memory(file: &FileConfig) -> Backends {
    let store = Arc::new(MemoryStore::new(MEMORY_IDEMPOTENCY_RECORDS));
    memory(
        file,
        Records::Memory(store),
        Arc::new(MemoryLimiter::new()),
        Services::default(),
        &BackendLatency::default(),
    )
}

/// Where the idempotency records are kept without a database.
enum Records {
    /// In this process: a fresh key's claim is written with its pending payment.
    Memory(Arc<MemoryStore>),
    /// In Redis, shared by every process.
    Redis(Arc<RedisStore>),
}

/// Idempotency records in Redis when there is one (so several processes still share them),
/// in memory otherwise.
fn redis_or_memory_store(config: &Config, redis: Option<&pools::Redis>) -> Records {
    match redis {
        Some(redis) => Records::Redis(Arc::new(RedisStore::new(
            redis.clone(),
            format!("{}:idem:", config.redis_key_prefix),
        ))),
        None => Records::Memory(Arc::new(MemoryStore::new(MEMORY_IDEMPOTENCY_RECORDS))),
    }
}

/// Payments and the audit trail in memory, idempotency records in `records`.
fn memory(
    file: &FileConfig,
    records: Records,
    limiter: Arc<dyn DynRateLimiter>,
    services: Services,
    latency: &BackendLatency,
) -> Backends {
    let audit = Arc::new(MemoryAuditLog::with_limits(
        file.audit.memory_events,
        file.audit.memory_events_per_user,
    ));
    let ledger = Arc::new(MemoryLedger::new(audit.clone()));
    let (store, intents): (Arc<dyn IdempotencyStore>, _) = match records {
        Records::Memory(store) => {
            let intents = IntentStore::Memory {
                store: Arc::clone(&store),
                ledger: Arc::clone(&ledger),
            };
            (store, Some(intents))
        }
        // Records in Redis and payments in memory cannot be written together.
        Records::Redis(store) => (Arc::new(TimedStore::new(store, "redis", latency)), None),
    };
    Backends {
        limiter,
        store,
        ledger,
        audit: audit as Arc<dyn AuditLog>,
        processor: Arc::new(SimulatedProcessor::new(
            file.processor,
            file.testing.payment_methods,
        )),
        intents,
        latency: latency.clone(),
        services,
    }
}
