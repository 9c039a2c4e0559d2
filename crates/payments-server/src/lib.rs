//! The bundled Tollgate payments server, as a library and a thin binary.
//!
//! [`app`] is the whole HTTP surface of `docs/http-api.md` as an axum `Router`, a function of
//! an [`AppState`]: tests drive it in process with `tower::ServiceExt::oneshot`, and the binary
//! serves it with [`serve::serve`]. [`Server::build`] makes the state from the configuration:
//! with none, everything is in memory and the development key `test-api-key` is accepted;
//! `DATABASE_URL` moves payments, idempotency records and the audit trail to PostgreSQL;
//! `REDIS_URL` moves rate-limit counters to Redis (and idempotency records too when there is no
//! database). Several processes on one Redis and PostgreSQL share limits and idempotency state.
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::net::SocketAddr;
//! use axum::extract::ConnectInfo;
//! use payments_server::config::{ApiKey, FileConfig};
//! use payments_server::{app, AppState};
//! use tower::ServiceExt;
//!
//! let state = AppState::in_memory(&FileConfig::default(), &[ApiKey::new("secret", "alice")]).unwrap();
//! let mut request = http::Request::get("/api/v1/rate-limits")
//!     .header("authorization", "Bearer secret")
//!     .body(axum::body::Body::empty())
//!     .unwrap();
//! request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 9))));
//! let response = app(state).oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 200);
//! assert!(response.headers().contains_key("x-request-id"));
//! # });
//! ```

mod access_log;
mod anonymous;
mod app;
mod audit_trail;
mod auth;
mod backends;
pub mod config;
mod handlers;
mod health;
pub mod healthcheck;
mod keys;
mod layers;
mod ledger;
mod live;
pub mod logging;
mod metrics;
mod migrate;
pub mod paths;
mod payment;
mod pools;
mod processor;
mod refusals;
pub mod reload;
mod reset;
mod responses;
pub mod serve;
pub mod signals;
mod start_error;
mod state;
mod subjects;
#[cfg(feature = "otlp")]
mod telemetry;
mod timed;
mod tls;
mod trace;

pub use app::app;
pub use backends::Server;
pub use keys::cli::run as keys_command;
pub use migrate::sql as migration_sql;
pub use reset::run as limits_command;
pub use start_error::StartError;
pub use state::AppState;

/// What the log says about an error: it and each of its sources.
pub(crate) use tollgate_http::error_chain;
