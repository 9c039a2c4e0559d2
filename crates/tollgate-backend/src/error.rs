//! [`Error`]: what a backend call or a setting failed with.

/// Any error, sendable between threads: a backend's own error, kept as a source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A schema name that is not a plain lower-case identifier of at most 63 bytes.
    #[error("invalid schema name {0:?}: a plain lower-case identifier of at most 63 bytes")]
    InvalidSchema(String),
    /// The backend failed (a pool, a connection, the server).
    #[error("the backend failed")]
    Backend {
        /// What failed, with what the backend said.
        #[source]
        source: BoxError,
        /// Whether retrying may help: a closed connection or a timeout may pass, a script or
        /// SQL error will not.
        transient: bool,
    },
}

impl Error {
    /// A backend failure.
    pub fn backend(source: impl Into<BoxError>, transient: bool) -> Self {
        Error::Backend {
            source: source.into(),
            transient,
        }
    }

    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Backend {
                transient: true,
                ..
            }
        )
    }

    /// The backend's own error (for a backend failure), or this error: what a crate that
    /// wraps it in an error of its own keeps as that error's source, so the chain of causes
    /// is the backend's and nothing more.
    pub fn into_source(self) -> BoxError {
        match self {
            Error::Backend { source, .. } => source,
            other => Box::new(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_failure_hands_back_its_own_error() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let error = Error::backend(io, true);
        assert!(error.is_transient());
        assert_eq!(error.into_source().to_string(), "reset by peer");
        let schema = Error::InvalidSchema("X".into());
        assert!(!schema.is_transient());
        assert!(
            schema
                .into_source()
                .to_string()
                .contains("invalid schema name")
        );
    }
}
