//! What the algorithms share: a key's [`Status`] and the one division they round with. A leaf,
//! so each algorithm uses them without depending on the dispatch above it.

/// What a key's state allows at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Status {
    /// Requests of cost 1 that would be admitted now.
    pub(crate) remaining: u64,
    /// µs until the full capacity is available again if nothing else is admitted.
    pub(crate) reset_after: u64,
}

/// `⌊a / b⌋` for `b > 0`; kept as a function so the Lua twin (`floordiv`) is easy to compare.
#[inline]
pub(crate) fn floor_div(a: u64, b: u64) -> u64 {
    a / b.max(1)
}
