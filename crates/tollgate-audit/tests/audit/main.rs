//! Integration tests of the audit sinks. PostgreSQL tests run when `TEST_DATABASE_URL` is set
//! (e.g. `postgres://postgres@127.0.0.1:5432/postgres`), each in a schema of its own; without it
//! they print a `SKIPPED` line and pass, and with it an unreachable database fails them.

mod local;
#[cfg(feature = "postgres")]
mod postgres;
