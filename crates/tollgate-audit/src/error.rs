//! The crate's [`Error`].

/// A boxed error kept as the source of [`Error::Sink`] and [`Error::Database`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The page request is invalid (limit out of range, malformed cursor).
    #[error("invalid page request: {0}")]
    InvalidPage(String),
    /// The sink could not write (I/O, serialization).
    #[error("audit sink error")]
    Sink(#[source] BoxError),
    /// The database failed; `transient` says whether retrying may help.
    #[error("audit database error")]
    Database {
        /// What failed (the database's error, with its own sources).
        #[source]
        source: BoxError,
        /// Whether a retry may succeed (connection loss, timeout).
        transient: bool,
    },
    /// The sink was shut down and accepts nothing more.
    #[error("audit sink is shut down")]
    Closed,
    /// Shutdown gave up with accepted events still unwritten (the database stayed unreachable).
    #[error("{0} accepted audit events could not be written before the shutdown deadline")]
    Unwritten(u64),
}

impl Error {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Database {
                transient: true,
                ..
            }
        )
    }
}

/// `error` and each of its sources, joined by `: ` (what a log line should say).
#[cfg(feature = "postgres")]
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
