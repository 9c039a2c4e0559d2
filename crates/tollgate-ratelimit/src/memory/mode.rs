//! [`Mode`]: whether a decision consumes. A leaf, so the shard and the packed window slots
//! both use it without depending on each other.

/// Whether a decision consumes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Mode {
    /// Consumes when admitted.
    Check,
    /// Reads only.
    Peek,
}
