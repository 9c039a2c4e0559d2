//! The command line: what to load, how, and against which references.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Debug, Parser)]
#[command(
    name = "tollgate-load",
    about = "Load and audit a Tollgate payments server",
    version
)]
pub(crate) struct Args {
    /// The server to load (ignored with --spawn).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub(crate) url: String,
    /// Start this payments-server binary on a free port for the run, with keys for --users,
    /// limits high enough not to interfere, and the processor's latency set to
    /// --processor-latency.
    #[arg(long)]
    pub(crate) spawn: Option<PathBuf>,
    /// PostgreSQL for the spawned server (and for --reference pg-commits).
    #[arg(long, env = "DATABASE_URL")]
    pub(crate) database_url: Option<String>,
    /// Redis for the spawned server.
    #[arg(long, env = "REDIS_URL")]
    pub(crate) redis_url: Option<String>,
    /// The spawned server's `redis.connection`: `pool` or `multiplexed`.
    #[arg(long, default_value = "multiplexed")]
    pub(crate) redis_connection: String,
    /// Distinct users (API keys `tollgate-load-key-N` for user `load-user-N`).
    #[arg(long, default_value_t = 100)]
    pub(crate) users: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 32)]
    pub(crate) concurrency: usize,
    /// How long to load.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Requests per second in total (0: as fast as the server answers). At a fixed rate each
    /// request's latency counts from when it was due, so a worker that falls behind reports
    /// the queueing too (no coordinated omission).
    #[arg(long, default_value_t = 0)]
    pub(crate) rate: u64,
    /// Share of operations that retry an earlier payment with its key and body.
    #[arg(long, default_value_t = 0.2)]
    pub(crate) retry_share: f64,
    /// Share of operations that send the same new payment twice at once.
    #[arg(long, default_value_t = 0.1)]
    pub(crate) duplicate_share: f64,
    /// The spawned server's simulated processor latency (its charges kept in the server's
    /// memory, so the run measures the server alone).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub(crate) processor_latency: Duration,
    /// Start this `mock-processor` binary on a free port (charges in its memory, answering
    /// after --processor-latency) and have the spawned server charge through it over HTTP.
    #[arg(long)]
    pub(crate) processor: Option<PathBuf>,
    /// What to send.
    #[arg(long, value_enum, default_value_t = Scenario::Payments)]
    pub(crate) scenario: Scenario,
    /// With `--spawn`: the server's `[database] group_commit` (the most payment writes in one
    /// transaction; 1 writes each alone); the server's default when unset.
    #[arg(long)]
    pub(crate) group_commit: Option<usize>,
    /// With `--spawn`: the server's `[database] group_commit_writers` (grouped transactions in
    /// flight at once); the server's default when unset.
    #[arg(long)]
    pub(crate) group_commit_writers: Option<usize>,
    /// With `--spawn`: the server's `[database] group_commit_alone_up_to` (payment writes in
    /// flight up to which a write goes at once, alone); the server's default when unset.
    #[arg(long)]
    pub(crate) group_commit_alone_up_to: Option<usize>,
    /// A reference to measure in the same run.
    #[arg(long, value_enum, default_value_t = Reference::None)]
    pub(crate) reference: Reference,
    /// Print the API_KEYS value for --users (to start a server by hand) and exit.
    #[arg(long)]
    pub(crate) print_api_keys: bool,
    /// No progress bar.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// (internal) serve hello-world on this address and print the port.
    #[arg(long, hide = true)]
    pub(crate) serve_hello: Option<std::net::SocketAddr>,
}

/// What the load consists of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// New payments, retries and concurrent duplicates (`--retry-share`, `--duplicate-share`).
    Payments,
    /// One user's new payments far over the payments limit: all but the first answer `429`.
    Flood,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Reference {
    None,
    /// A hyper hello-world server, driven by the same client.
    Hello,
    /// Two single-row autocommitted INSERTs per payment, at the same concurrency.
    PgCommits,
}
