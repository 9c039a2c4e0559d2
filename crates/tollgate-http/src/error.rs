//! The crate's [`Error`].

/// The crate's error type; variants arrive with the layers that need them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {}
