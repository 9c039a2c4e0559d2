//! The crate's [`Error`].

/// The crate's error type; variants arrive with the layers that need them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {}

/// `error` and each of its sources, joined by `: `: what a log line should say about a store
/// or database failure (the client gets a fixed message).
///
/// ```
/// let error = std::io::Error::other("connection reset");
/// assert_eq!(tollgate_http::error_chain(&error), "connection reset");
/// ```
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
