//! Retrying done right for payment APIs: backoff with jitter capped after jitter, `Retry-After`,
//! retry budgets, a circuit breaker, and the rule that a `POST` is repeated only with the same
//! `Idempotency-Key` — all on an injectable clock and a seedable RNG, so every schedule is
//! testable without sleeping.
//!
//! | module | what |
//! |---|---|
//! | [`backoff`] | constant/exponential delays; none, full, equal, decorrelated jitter |
//! | [`retry_after`] | `Retry-After` parsing (delta-seconds, HTTP-date) and clamping |
//! | [`classify`] | which statuses to retry, which requests may be repeated |
//! | [`budget`] | AWS-standard and gRPC-style retry budgets |
//! | [`breaker`] | circuit breaker on failure and slow-call rates |
//! | [`config`] | `RetryConfig`, what `GET /api/v1/retry-config` publishes |
//! | [`retry`] | the driver |
//! | `layer` | a tower `Layer` for clients (feature `tower`) |
//! | `policy` | the same rules as a `tower::retry::Policy` (feature `tower`) |
//! | `breaker_layer` | a tower `Layer` that calls a dependency through a breaker (feature `tower`) |
//! | [`clock`] | clocks and sleepers |
//!
//! # Why jitter: the AWS experiment, reproduced
//!
//! 100 clients each need one write to a row guarded by optimistic concurrency, all starting at
//! once; a call commits 1 ms after it reads and fails if another commit got in between; failed
//! clients back off (exponential, 1 ms base, 1 s cap) and retry until they succeed. Deterministic
//! event simulation, seeded jitter (`tests/retry/simulation.rs` asserts these numbers exactly):
//!
//! | jitter | total calls | all clients done after |
//! |---|---:|---:|
//! | none | 5 050 | 90 123 ms |
//! | full | 745 | 376 ms |
//! | equal | 757 | 849 ms |
//! | decorrelated | 777 | 292 ms |
//!
//! Without jitter every failed client retries in the same instant again, so each round lets one
//! client through; any jitter spreads them and cuts the work by 6–7× and the time by 100×+.
//! Full jitter does the least work, which is why it is the default.
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tollgate_retry::budget::RetryBudget;
//! use tollgate_retry::clock::ManualClock;
//! use tollgate_retry::config::RetryConfig;
//! use tollgate_retry::retry::{Attempt, Retrier};
//!
//! // Obey the server's published policy, sharing a budget across calls.
//! let policy = RetryConfig::default().to_policy()?.budget(RetryBudget::aws_standard());
//! let clock = ManualClock::new();
//! let retrier = Retrier::with_clock(policy, Arc::new(clock.clone()), Arc::new(clock.clone()));
//!
//! // The server answers 429 with Retry-After: 2, then 201.
//! let result: Result<u16, u16> = retrier
//!     .run(
//!         |attempt| async move { if attempt == 1 { Err(429) } else { Ok(201) } },
//!         |result| match result {
//!             Err(_) => Attempt::Retry { after: Some(Duration::from_secs(2)), cause: tollgate_retry::budget::Cause::Error },
//!             Ok(_) => Attempt::Done,
//!         },
//!     )
//!     .await;
//! assert_eq!(result, Ok(201));
//! assert_eq!(clock.elapsed(), Duration::from_secs(2)); // Retry-After, not the backoff
//! # Ok::<(), tollgate_retry::Error>(())
//! # }).unwrap();
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

pub mod backoff;
pub mod breaker;
#[cfg(feature = "tower")]
pub mod breaker_layer;
pub mod budget;
pub mod classify;
pub mod clock;
pub mod config;
mod error;
#[cfg(feature = "tower")]
pub mod layer;
#[cfg(feature = "tower")]
pub mod policy;
pub mod retry;
pub mod retry_after;
pub mod telemetry;

pub use error::Error;

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
