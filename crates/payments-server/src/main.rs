//! The bundled Tollgate payments server: every endpoint of the HTTP contract in
//! `docs/http-api.md`, composed from the Tollgate crates over hyper.
//!
//! With no configuration it keeps everything in memory and accepts the development key
//! `test-api-key`. `DATABASE_URL` moves payments, idempotency records and the audit trail to
//! PostgreSQL; `REDIS_URL` moves rate-limit counters to Redis (and idempotency records too when
//! there is no database). Several processes on one Redis and PostgreSQL share limits and
//! idempotency state. `--help` lists every setting; `docs/operations.md` explains them.

mod app;
mod auth;
mod config;
mod health;
mod ledger;
mod metrics;
mod payment;
mod processor;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tollgate_audit::postgres::{AuditLogConfig, PostgresAuditLog};
use tollgate_audit::{AuditLog, MemoryAuditLog};
use tollgate_http::client_ip::TrustedProxies;
use tollgate_idempotency::memory::MemoryStore;
use tollgate_idempotency::postgres::PostgresStore;
use tollgate_idempotency::redis::RedisStore;
use tollgate_idempotency::store::{ClaimOptions, IdempotencyStore};
use tollgate_idempotency::{Idempotency, IdempotencyConfig};
use tollgate_ratelimit::redis::{FailureMode, RedisLimiter};
use tollgate_ratelimit::{MemoryLimiter, RateLimiter};
use tollgate_retry::breaker::{BreakerConfig, CircuitBreaker, Window};

use crate::config::{Config, FailureModeName, FileConfig, LogFormat};
use crate::ledger::{Ledger, MemoryLedger, PostgresLedger};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every request allocates small, short-lived objects (headers, JSON, keys); mimalloc serves
/// them from thread-local pages. Measured in docs/performance.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Idempotency records kept in memory at most (the oldest expire first).
const MEMORY_IDEMPOTENCY_RECORDS: usize = 1_000_000;
/// Audit events kept in memory at most.
const MEMORY_AUDIT_EVENTS: usize = 100_000;

fn init_logging(config: &Config) -> Result<(), BoxError> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .map_err(|e| format!("LOG_LEVEL {:?}: {e}", config.log_level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

/// Where payments, idempotency records and the audit trail live.
struct Storage {
    store: Arc<dyn IdempotencyStore>,
    ledger: Arc<dyn Ledger>,
    audit: Arc<dyn AuditLog>,
    /// The PostgreSQL audit log, to flush at shutdown.
    audit_pg: Option<Arc<PostgresAuditLog>>,
    /// The PostgreSQL ledger, for health checks.
    database: Option<Arc<dyn Ledger>>,
    /// The simulated processor, keeping its charges beside the payments.
    processor: Arc<dyn processor::PaymentProcessor>,
}

/// What `main` keeps to shut down cleanly.
struct Running {
    app: Arc<app::App>,
    audit_pg: Option<Arc<PostgresAuditLog>>,
    idempotency_store: Arc<dyn IdempotencyStore>,
}

async fn build(config: &Config, file: &FileConfig) -> Result<Running, BoxError> {
    let (keys, development) = config.keys()?;
    if development {
        tracing::warn!(
            "no API_KEYS or API_KEY set: development mode, accepting the key `{}` as user `test`",
            config::DEV_KEY
        );
    }
    let policies = file.policy_set()?;

    let redis_pool = match &config.redis_url {
        None => None,
        Some(url) => Some(
            deadpool_redis::Config::from_url(url.as_str())
                .create_pool(Some(deadpool_redis::Runtime::Tokio1))
                .map_err(|e| format!("REDIS_URL: {e}"))?,
        ),
    };
    let database_pool = match &config.database_url {
        None => None,
        Some(url) => {
            let pg: tokio_postgres::Config =
                url.parse().map_err(|e| format!("DATABASE_URL: {e}"))?;
            let manager = deadpool_postgres::Manager::from_config(
                pg,
                tokio_postgres::NoTls,
                deadpool_postgres::ManagerConfig {
                    recycling_method: deadpool_postgres::RecyclingMethod::Fast,
                },
            );
            Some(
                deadpool_postgres::Pool::builder(manager)
                    .max_size(16)
                    .build()
                    .map_err(|e| format!("DATABASE_URL: {e}"))?,
            )
        }
    };

    // Rate limits: Redis if configured, shared by every process; memory otherwise.
    let (limiter, redis_limiter): (Arc<dyn RateLimiter>, _) = match &redis_pool {
        Some(pool) => {
            let mode = match file.rate_limit.failure_mode {
                FailureModeName::FailOpen => FailureMode::FailOpen,
                FailureModeName::FailClosed => FailureMode::FailClosed {
                    retry_after: Duration::from_secs(1),
                },
                FailureModeName::LocalFallback => FailureMode::LocalFallback,
                FailureModeName::Error => FailureMode::ReturnError,
            };
            let limiter = RedisLimiter::builder(pool.clone())
                .key_prefix(format!("{}:rl:", config.redis_key_prefix))
                .failure_mode(mode)
                .timeout(file.rate_limit.redis_timeout)
                .build();
            limiter
                .ping()
                .await
                .map_err(|e| format!("REDIS_URL: Redis does not answer: {e}"))?;
            (Arc::new(limiter.clone()), Some(limiter))
        }
        None => (Arc::new(MemoryLimiter::new()), None),
    };

    // Payments, idempotency records and the audit trail: PostgreSQL is the source of truth
    // when configured; otherwise idempotency records go to Redis if there is one.
    let storage = match database_pool {
        Some(pool) => {
            let schema = config.database_schema.as_str();
            let store = Arc::new(
                PostgresStore::start(pool.clone(), schema)
                    .await
                    .map_err(|e| format!("DATABASE_URL: {e}"))?,
            );
            let audit = Arc::new(
                PostgresAuditLog::start(
                    pool.clone(),
                    AuditLogConfig {
                        schema: schema.to_owned(),
                        ..AuditLogConfig::default()
                    },
                )
                .await
                .map_err(|e| format!("DATABASE_URL: {e}"))?,
            );
            let processor = Arc::new(
                processor::SimulatedProcessor::in_postgres(file.processor, pool.clone(), schema)
                    .await
                    .map_err(|e| format!("DATABASE_URL: {e}"))?,
            );
            let ledger: Arc<dyn Ledger> = Arc::new(
                PostgresLedger::start(pool, schema, Arc::clone(&store), Arc::clone(&audit))
                    .await
                    .map_err(|e| format!("DATABASE_URL: {e}"))?,
            );
            Storage {
                store,
                ledger: Arc::clone(&ledger),
                audit: audit.clone(),
                audit_pg: Some(audit),
                database: Some(ledger),
                processor,
            }
        }
        None => {
            let audit = Arc::new(MemoryAuditLog::new(MEMORY_AUDIT_EVENTS));
            let store: Arc<dyn IdempotencyStore> = match &redis_pool {
                Some(pool) => Arc::new(RedisStore::new(
                    pool.clone(),
                    format!("{}:idem:", config.redis_key_prefix),
                )),
                None => Arc::new(MemoryStore::new(MEMORY_IDEMPOTENCY_RECORDS)),
            };
            let ledger = Arc::new(MemoryLedger::new(audit.clone()));
            Storage {
                store,
                ledger,
                audit,
                audit_pg: None,
                database: None,
                processor: Arc::new(processor::SimulatedProcessor::in_memory(file.processor)),
            }
        }
    };

    let Storage {
        store,
        ledger,
        audit,
        audit_pg,
        database,
        processor,
    } = storage;
    let tuning = file.idempotency;
    let idempotency = Idempotency::new(
        Arc::clone(&store),
        IdempotencyConfig {
            claim: ClaimOptions {
                lease: tuning.lease,
                ttl: tuning.ttl,
            },
            wait: tuning.wait,
            ..IdempotencyConfig::default()
        },
    );
    let breaker = CircuitBreaker::new(BreakerConfig {
        window: Window::Count(file.breaker.window_calls.max(1)),
        failure_rate_threshold: file.breaker.failure_rate_threshold,
        minimum_calls: file.breaker.minimum_calls.max(1),
        wait_in_open: file.breaker.wait_in_open,
        ..BreakerConfig::default()
    });
    tracing::info!(
        rate_limits = if redis_limiter.is_some() {
            "redis"
        } else {
            "memory"
        },
        payments = if database.is_some() {
            "postgresql"
        } else {
            "memory"
        },
        idempotency = if database.is_some() {
            "postgresql"
        } else if redis_pool.is_some() {
            "redis"
        } else {
            "memory"
        },
        "backends ready"
    );
    let app = app::App::new(app::Parts {
        keys,
        policies,
        limiter,
        idempotency,
        idempotency_ttl: tuning.ttl,
        ledger,
        audit,
        processor,
        breaker,
        services: health::Services {
            redis: redis_limiter,
            database,
        },
        trusted_proxies: TrustedProxies::new(file.trusted_proxies.iter().copied()),
        timeouts: file.timeouts,
    });
    Ok(Running {
        app,
        audit_pg,
        idempotency_store: store,
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Deletes expired idempotency records in bounded batches, once a minute.
fn spawn_cleanup(store: Arc<dyn IdempotencyStore>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            match store.cleanup(1_000).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "expired idempotency records deleted"),
                Err(error) => tracing::warn!(%error, "idempotency cleanup failed"),
            }
        }
    });
}

async fn run(config: Config) -> Result<(), BoxError> {
    let file = config.file()?;
    let running = build(&config, &file).await?;
    spawn_cleanup(Arc::clone(&running.idempotency_store));
    let listener = TcpListener::bind(config.bind_addr)
        .await
        .map_err(|e| format!("BIND_ADDR {}: {e}", config.bind_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "payments-server listening");

    let graceful = GracefulShutdown::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers are small and written whole: never let Nagle hold one back for an ACK.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "TCP_NODELAY not set");
        }
        let app = Arc::clone(&running.app);
        let service = service_fn(move |request| {
            let app = Arc::clone(&app);
            async move { Ok::<_, std::convert::Infallible>(app.serve(request, peer).await) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            // A client that sends its request and shuts its write side still gets its answer.
            .half_close(true)
            .header_read_timeout(file.timeouts.header_read)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, draining requests in flight");
    let grace = file.timeouts.shutdown_grace;
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all requests answered"),
        () = tokio::time::sleep(grace) => tracing::warn!(?grace, "requests still in flight after the grace period"),
    }
    if let Some(audit) = running.audit_pg {
        match audit.shutdown().await {
            Ok(()) => tracing::info!("audit trail flushed"),
            Err(error) => tracing::error!(%error, "audit trail not fully flushed"),
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    if let Err(error) = init_logging(&config) {
        eprintln!("payments-server: invalid configuration: {error}");
        return std::process::ExitCode::from(2);
    }
    match run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("payments-server: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
