//! Pay safely from Rust: a [reqwest-middleware] middleware that retries a payment API's calls
//! the way its server expects, and never in a way that could charge twice.
//!
//! - **A key on every payment.** `POST` and `PATCH` requests get an `Idempotency-Key` (a
//!   UUIDv7) before the first attempt, so every retry carries the same key. A key the caller
//!   set is never replaced.
//! - **Only safe retries.** Idempotent methods are retried; `POST` and `PATCH` only with a key
//!   (turn key generation off and they are sent exactly once). Retried: transport errors and
//!   timeouts, 408, 429, 500, 502, 503, 504, and a 409 with `Retry-After` (the same key still
//!   in progress). Never retried: any other 4xx, such as 400, 401, 403, 404 and 422.
//! - **The server's pace.** `Retry-After` (seconds or an HTTP date) is obeyed, capped by the
//!   policy; otherwise the delay is exponential backoff with jitter from [`tollgate_retry`].
//! - **Shared limits.** A retry budget shared by every request of a client, so an outage does
//!   not multiply its load, and optionally a circuit breaker per host.
//! - **Observable.** [`RetryMiddleware::notify`] hears each retry with its attempt, delay and
//!   the status or error; the response carries [`Attempts`] and [`IdempotencyKey`] in its
//!   extensions.
//! - **Configured by the server.** [`RetryMiddleware::from_server`] reads the policy a
//!   Tollgate server publishes at `GET /api/v1/retry-config`.
//!
//! A request whose body is a stream cannot be copied, and is sent exactly once.
//!
//! [reqwest-middleware]: https://docs.rs/reqwest-middleware
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use axum::http::{HeaderMap, StatusCode};
//! use tollgate_reqwest::{Attempts, IdempotencyKey, RetryMiddleware};
//! use tollgate_retry::clock::ManualClock;
//!
//! // A payment API that is busy once (429, Retry-After: 1), then creates the payment.
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = Arc::clone(&calls);
//! let api = axum::Router::new().route("/payments", axum::routing::post(move |headers: HeaderMap| async move {
//!     assert!(headers.contains_key("idempotency-key"));
//!     match seen.fetch_add(1, Ordering::SeqCst) {
//!         0 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response(),
//!         _ => StatusCode::CREATED.into_response(),
//!     }
//! }));
//! # use axum::response::IntoResponse;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let address = listener.local_addr()?;
//! tokio::spawn(async move { axum::serve(listener, api).await });
//!
//! let clock = ManualClock::new(); // waits take no time in this example
//! let retry = RetryMiddleware::default().clock(Arc::new(clock.clone()), Arc::new(clock.clone()));
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new()).with(retry).build();
//!
//! let response = client
//!     .post(format!("http://{address}/payments"))
//!     .body(r#"{"amount":"10.00","currency":"USD"}"#)
//!     .send()
//!     .await?;
//! assert_eq!(response.status(), 201);
//! assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(2)));
//! assert!(response.extensions().get::<IdempotencyKey>().is_some());
//! assert_eq!(clock.elapsed(), std::time::Duration::from_secs(1)); // the server's Retry-After
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod middleware;
mod rules;

pub use error::Error;
pub use middleware::{Failure, IdempotencyKey, RetryEvent, RetryMiddleware};
pub use rules::Rules;
pub use tollgate_retry::retry::Attempts;

/// The crates this one is built on, at the versions it uses: a caller needs nothing else to
/// build a client, a policy or a test clock.
pub use reqwest;
pub use reqwest_middleware;
pub use tollgate_retry as retry;

/// The README's example, compiled as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
