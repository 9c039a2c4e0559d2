//! Command-line options (each also an environment variable).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// A card processor's API for development, tests and demos: `POST /v1/charges` charges once per
/// `Idempotency-Key`, `GET /v1/charges/{reference}` finds a charge, `GET /v1/stats` counts
/// charges and requests. Faults are off unless a rate below says otherwise.
#[derive(Clone, Debug, Parser)]
#[command(name = "mock-processor", version)]
pub(crate) struct Options {
    /// Address to listen on.
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:8090")]
    pub(crate) bind: SocketAddr,

    /// Keep charges in PostgreSQL (`postgres://user:pass@host/db`), so they survive a restart;
    /// in memory when unset.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,

    /// PostgreSQL schema of the charges and their idempotency records (created if missing).
    #[arg(long, env = "MOCK_PROCESSOR_SCHEMA", default_value = "mock_processor")]
    pub(crate) schema: String,

    /// Time to answer a charge, after it is made (`0ms`, `20ms`, `1s`).
    #[arg(long, env = "MOCK_PROCESSOR_LATENCY", default_value = "0ms", value_parser = duration)]
    pub(crate) latency: Duration,

    /// Extra answer time, uniform between zero and this, added to `--latency`.
    #[arg(long, env = "MOCK_PROCESSOR_JITTER", default_value = "0ms", value_parser = duration)]
    pub(crate) jitter: Duration,

    /// Share of charges declined (`card_declined`), 0 to 1. The payment method `test_decline`
    /// is always declined.
    #[arg(long, env = "MOCK_PROCESSOR_DECLINE_RATE", default_value_t = 0.0, value_parser = rate)]
    pub(crate) decline_rate: f64,

    /// Share of charge requests answered `500` or `503` before charging (nothing charged).
    #[arg(long, env = "MOCK_PROCESSOR_FAIL_RATE", default_value_t = 0.0, value_parser = rate)]
    pub(crate) fail_rate: f64,

    /// Share of charges whose answer is lost: charged, then the connection is closed without
    /// a response. The same key replays the charge.
    #[arg(long, env = "MOCK_PROCESSOR_LOSE_RATE", default_value_t = 0.0, value_parser = rate)]
    pub(crate) lose_rate: f64,

    /// Share of charge requests refused with `429` and `Retry-After` (nothing charged).
    #[arg(long, env = "MOCK_PROCESSOR_THROTTLE_RATE", default_value_t = 0.0, value_parser = rate)]
    pub(crate) throttle_rate: f64,

    /// `Retry-After` of a throttled request, in whole seconds.
    #[arg(long, env = "MOCK_PROCESSOR_RETRY_AFTER", default_value_t = 1)]
    pub(crate) retry_after: u32,

    /// Share of charges answered after `--slow-latency` instead (charged first): past a
    /// caller's deadline.
    #[arg(long, env = "MOCK_PROCESSOR_SLOW_RATE", default_value_t = 0.0, value_parser = rate)]
    pub(crate) slow_rate: f64,

    /// Answer time of a slow charge.
    #[arg(long, env = "MOCK_PROCESSOR_SLOW_LATENCY", default_value = "30s", value_parser = duration)]
    pub(crate) slow_latency: Duration,

    /// Seed of the fault dice (a run with the same seed and the same requests in the same
    /// order injects the same faults); random when unset.
    #[arg(long, env = "MOCK_PROCESSOR_SEED")]
    pub(crate) seed: Option<u64>,

    /// PEM certificate chain to serve https with (with `--tls-key`); plain http when unset.
    #[arg(long, env = "MOCK_PROCESSOR_TLS_CERT", requires = "tls_key")]
    pub(crate) tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "MOCK_PROCESSOR_TLS_KEY", requires = "tls_cert")]
    pub(crate) tls_key: Option<std::path::PathBuf>,

    /// A client must send its request head (and finish a TLS handshake) within this long, or
    /// its connection is closed.
    #[arg(long, env = "MOCK_PROCESSOR_HEADER_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub(crate) header_timeout: Duration,

    /// Connections open at once; past it a new one is closed at once.
    #[arg(long, env = "MOCK_PROCESSOR_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_connections: u32,

    /// Log filter (`info`, `mock_processor=debug`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub(crate) log_level: String,
}

impl Options {
    /// The longest a charge request can run: its idempotency lease must outlast it.
    pub(crate) fn longest_answer(&self) -> Duration {
        (self.latency + self.jitter).max(self.slow_latency)
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration: {e}"))
}

fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{text:?} is not a share between 0 and 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_shares_and_durations_have_units() {
        assert!(Options::try_parse_from(["mock-processor", "--lose-rate", "0.2"]).is_ok());
        let error = Options::try_parse_from(["mock-processor", "--lose-rate", "20"])
            .expect_err("a rate over 1")
            .to_string();
        assert!(error.contains("--lose-rate"), "{error}");
        assert!(error.contains("between 0 and 1"), "{error}");
        let error = Options::try_parse_from(["mock-processor", "--latency", "20"])
            .expect_err("no unit")
            .to_string();
        assert!(error.contains("--latency"), "{error}");
    }
}
