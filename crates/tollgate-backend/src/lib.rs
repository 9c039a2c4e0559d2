//! The backend plumbing the Tollgate crates share, in the manner of `deadpool-runtime`: one
//! small leaf crate, so each backend crate does not carry its own copy.
//!
//! - [`check_schema`]: schema names are spliced into SQL, so only plain lower-case identifiers
//!   pass.
//! - `redis` (feature `redis`, and `cluster` for a Redis Cluster): [`redis::RedisConnection`],
//!   one type for a deadpool-redis pool, a multiplexed `ConnectionManager` or a cluster
//!   connection, that runs a script or a `PING` and says whether a failure may pass.
//! - `postgres` (feature `postgres`): [`postgres::migrate`], a migration in one transaction
//!   under the advisory lock every Tollgate migration of a schema takes, and
//!   [`postgres::is_transient`]; [`group_commit::GroupCommit`], concurrent callers' statements
//!   written in shared transactions, and a [`group_commit::Batched`] statement's callers in one
//!   execution of it.
//!
//! Failures are one [`Error`]: a backend's own error kept as the source, with whether retrying
//! may help.
//!
//! # Example
//!
//! ```
//! use tollgate_backend::{Error, check_schema};
//!
//! assert_eq!(check_schema("tollgate")?, "tollgate");
//! let refused = check_schema("Robert'); DROP TABLE students;--").unwrap_err();
//! assert!(matches!(refused, Error::InvalidSchema(_)));
//! assert!(!refused.is_transient());
//! # Ok::<(), Error>(())
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

mod error;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod group_commit;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
mod schema;

pub use error::{BoxError, Error};
pub use schema::check_schema;
