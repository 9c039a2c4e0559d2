//! [`StartError`]: why the server could not start, in one line naming the setting.

use tollgate_backend::BoxError;

/// Why the server could not start: one line naming the setting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is invalid; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// The backend a setting names could not be reached or prepared.
    #[error("{setting}: {}", crate::error_chain(cause.as_ref()))]
    Backend {
        /// The setting (`DATABASE_URL`, `REDIS_URL`, …).
        setting: &'static str,
        /// What failed, with what the backend said.
        cause: BoxError,
    },
}

pub(crate) fn backend(setting: &'static str) -> impl FnOnce(BoxError) -> StartError {
    move |cause| StartError::Backend { setting, cause }
}
