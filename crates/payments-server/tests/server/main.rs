//! The payments server as a real process on a real port, spoken to over real sockets: every
//! route and every error code with memory backends, again with Redis and PostgreSQL, two
//! processes sharing them, graceful shutdown, timeouts, and the README's curl examples.
//!
//! Tests that need Redis and PostgreSQL read `TEST_REDIS_URL` and `TEST_DATABASE_URL`; without
//! them they print a `SKIPPED` line and pass. Each isolates itself with a unique schema and
//! Redis key prefix, removed afterwards.

mod abuse;
mod cluster;
mod deploy;
mod failover;
mod faults;
#[path = "../common/fixtures.rs"]
mod fixtures;
mod history;
mod hostile;
mod keys;
mod lifecycle;
mod load;
mod outage;
mod pooler;
mod processor;
mod python_examples;
mod readme;
mod reload;
#[path = "../common/reply.rs"]
mod reply;
mod reqwest_client;
mod reset;
#[path = "../common/services.rs"]
mod services;
mod spec_examples;
mod startup;
mod support;
#[cfg(feature = "otlp")]
mod telemetry;
mod tls;
mod two_process;
