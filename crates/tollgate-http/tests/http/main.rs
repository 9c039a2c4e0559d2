//! Integration tests of the HTTP glue: the rate-limit layer around a real tower service.

#[cfg(all(feature = "ratelimit", feature = "idempotency"))]
mod axum;
mod client_ip;
#[cfg(feature = "idempotency")]
mod idempotency;
#[cfg(feature = "ratelimit")]
mod ratelimit;
