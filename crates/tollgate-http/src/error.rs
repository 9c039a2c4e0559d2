//! [`error_chain`]. The layers answer failures as responses (problem+json), so the crate has
//! no error type of its own.

/// `error` and each of its sources, joined by `: `: what a log line should say about a store
/// or database failure (the client gets a fixed message). A source that an error's own
/// message already ends with (some errors print their cause themselves) is not repeated.
///
/// ```
/// let error = std::io::Error::other("connection reset");
/// assert_eq!(tollgate_http::error_chain(&error), "connection reset");
/// ```
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("handshake failed: {0}")]
    struct SaysItsCause(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("handshake failed")]
    struct KeepsItsCause(#[source] std::io::Error);

    #[test]
    fn each_cause_once() {
        let cause = || std::io::Error::other("bad certificate");
        assert_eq!(
            error_chain(&SaysItsCause(cause())),
            "handshake failed: bad certificate"
        );
        assert_eq!(
            error_chain(&KeepsItsCause(cause())),
            "handshake failed: bad certificate"
        );
    }
}
