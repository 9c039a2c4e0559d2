//! `mock-processor`: a card processor's API for development, tests and demos, with faults on
//! demand. `mock-processor --help` lists every option.
//!
//! - `POST /v1/charges` with an `Idempotency-Key` (the caller's reference) and
//!   `{"amount": <minor units>, "currency": "USD", "payment_method": "..."}` → `201` with
//!   `{id, reference, amount, currency, payment_method, status, decline_code?, created}`; the
//!   same key replays the same charge (`Idempotent-Replayed: true`), the same key with another
//!   body is `422`, and while the first request is in flight `409` with `Retry-After`.
//! - `GET /v1/charges/{reference}` → the charge, or `404`.
//! - `GET /v1/stats` → `{"charges": N, "requests": M}`: charges made, requests received.

mod charges;
mod faults;
mod options;
mod routes;
mod serve;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tollgate_idempotency::memory::MemoryStore;
use tollgate_idempotency::postgres::PostgresStore;
use tollgate_idempotency::store::{ClaimOptions, IdempotencyStore};
use tollgate_idempotency::{Idempotency, IdempotencyConfig};

use charges::{ChargeBook, MemoryCharges, PostgresCharges};
use options::Options;
use routes::Processor;

/// Idempotency records kept in memory (oldest evicted first).
const MEMORY_RECORDS: usize = 1_000_000;

/// The charge book and the idempotency store, in memory or in PostgreSQL.
async fn storage(
    options: &Options,
) -> Result<(Arc<dyn ChargeBook>, Arc<dyn IdempotencyStore>), String> {
    let Some(url) = &options.database_url else {
        return Ok((
            Arc::new(MemoryCharges::default()),
            Arc::new(MemoryStore::new(MEMORY_RECORDS)),
        ));
    };
    let setting = |e: &dyn std::fmt::Display| format!("DATABASE_URL: {e}");
    let config: tokio_postgres::Config = url.parse().map_err(|e| setting(&e))?;
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(16)
        .build()
        .map_err(|e| setting(&e))?;
    let schema = &options.schema;
    let failed = |e: &dyn std::fmt::Display| format!("MOCK_PROCESSOR_SCHEMA {schema:?}: {e}");
    // One versioned migration, recorded: a restart on a migrated schema runs no DDL.
    let ddl = format!(
        "{}\n{}",
        charges::MIGRATE.replace("{schema}", schema),
        PostgresStore::migration(schema).map_err(|e| failed(&e))?
    );
    tollgate_backend::postgres::migrate(&pool, schema, &ddl)
        .await
        .map_err(|e| failed(&e))?;
    let store = PostgresStore::open(pool.clone(), schema).map_err(|e| failed(&e))?;
    Ok((
        Arc::new(PostgresCharges::new(pool, schema)),
        Arc::new(store),
    ))
}

async fn run(options: Options) -> Result<(), String> {
    let (book, store) = storage(&options).await?;
    // The lease outlasts the slowest answer, so a retry waits for the first request instead
    // of taking it over; a duplicate waits briefly, then gets 409 with Retry-After.
    let claim = ClaimOptions::new(
        options.longest_answer() + Duration::from_secs(10),
        Duration::from_secs(24 * 3600),
    );
    let config = IdempotencyConfig::default()
        .claim(claim)
        .wait(Duration::from_millis(50));
    let idempotency = Arc::new(Idempotency::new(store, config));
    let processor = Arc::new(Processor {
        book,
        faults: faults::Faults::new(&options),
        requests: AtomicU64::new(0),
    });
    let listener = TcpListener::bind(options.bind)
        .await
        .map_err(|e| format!("BIND_ADDR {}: {e}", options.bind))?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(
            %addr,
            persistent = options.database_url.is_some(),
            https = options.tls_cert.is_some(),
            "mock-processor listening"
        );
    }
    let tls = match (&options.tls_cert, &options.tls_key) {
        (Some(cert), Some(key)) => Some(serve::tls_acceptor(cert, key)?),
        _ => None,
    };
    let bounds = serve::Bounds {
        header_timeout: options.header_timeout,
        max_connections: options.max_connections as usize,
    };
    serve::serve(
        listener,
        routes::router(processor, idempotency),
        (tls, bounds),
        serve::signalled(),
    )
    .await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = Options::parse();
    let filter = match tracing_subscriber::EnvFilter::try_new(&options.log_level) {
        Ok(filter) => filter,
        Err(error) => {
            eprintln!("mock-processor: LOG_LEVEL {:?}: {error}", options.log_level);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mock-processor: {error}");
            ExitCode::FAILURE
        }
    }
}
