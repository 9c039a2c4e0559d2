//! Reading a user's trail back a page at a time.

use uuid::Uuid;

use crate::{AuditEvent, Error};

/// The most entries one page may ask for.
pub const MAX_PAGE_SIZE: usize = 100;
/// The page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: usize = 20;

/// Which page to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    limit: usize,
    before: Option<Uuid>,
}

impl PageRequest {
    /// `limit` entries (1–100, default 20) older than `cursor` (a page's `next_cursor`, or none
    /// for the newest).
    pub fn new(limit: Option<usize>, cursor: Option<&str>) -> Result<Self, Error> {
        let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(Error::InvalidPage(format!(
                "limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}"
            )));
        }
        let before = cursor
            .map(|c| {
                Uuid::parse_str(c)
                    .map_err(|_| Error::InvalidPage(format!("malformed cursor {c:?}")))
            })
            .transpose()?;
        Ok(PageRequest { limit, before })
    }

    /// Entries per page.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Only entries with an id below this one (the decoded cursor).
    pub fn before(&self) -> Option<Uuid> {
        self.before
    }
}

/// One page of a user's audit trail.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Page {
    /// Newest first.
    pub entries: Vec<AuditEvent>,
    /// Pass to [`PageRequest::new`] for the next (older) page; `None` on the last page.
    pub next_cursor: Option<String>,
}

impl Page {
    /// Builds a page from up to `limit + 1` entries fetched newest first: the extra one only
    /// tells that another page exists.
    pub fn from_overfetch(mut entries: Vec<AuditEvent>, limit: usize) -> Self {
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_cursor = more
            .then(|| entries.last().map(|e| e.id.to_string()))
            .flatten();
        Page {
            entries,
            next_cursor,
        }
    }
}
