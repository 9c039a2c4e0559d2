//! Integration tests of the HTTP glue: the rate-limit layer around a real tower service.

mod axum;
mod client_ip;
mod idempotency;
mod ratelimit;
