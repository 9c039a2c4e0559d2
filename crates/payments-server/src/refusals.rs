//! Refusals in the audit trail, folded per window. The first refusal of a user for one reason
//! (an action, and for a rate limit its policy) in a window is written at once, so the trail
//! shows it; the rest in that window are only counted, and one entry carrying the count
//! (`repeated`) is written when the window ends. A flood costs at most two rows per user,
//! reason and window, however fast it comes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tollgate_audit::{Action, AuditEvent, Outcome};
use tollgate_clock::{Clock, Timestamp};

/// What a refusal is folded with: the same user, action and detail (a rate limit's policy).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Reason {
    pub(crate) user: Arc<str>,
    pub(crate) action: Action,
    pub(crate) detail: Option<String>,
}

#[derive(Debug)]
struct Window {
    ends: Timestamp,
    folded: u64,
    /// The latest refusal folded: its status, key and request id go into the summary.
    last: Option<AuditEvent>,
}

/// The open windows. Bounded: users are the configured ones, actions and details (policy
/// names) come from the configuration, and a window is dropped when it ends.
#[derive(Debug)]
pub(crate) struct RefusalDigest {
    window: Duration,
    clock: Arc<dyn Clock>,
    open: Mutex<HashMap<Reason, Window>>,
}

impl RefusalDigest {
    /// Windows `window` long, on `clock`.
    pub(crate) fn new(window: Duration, clock: Arc<dyn Clock>) -> Self {
        RefusalDigest {
            window,
            clock,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The entries to write now for a refusal `event` for `reason`: the summary of the reason's
    /// previous window if it ended with refusals folded, and `event` itself if it opens a new
    /// window. `None` of them when `event` is folded into an open window.
    pub(crate) fn admit(&self, reason: Reason, event: AuditEvent) -> Vec<AuditEvent> {
        let now = self.clock.now();
        let mut open = self.open.lock();
        let mut write = Vec::new();
        if let Some(window) = open.get_mut(&reason) {
            if now < window.ends {
                window.folded += 1;
                window.last = Some(event);
                return write;
            }
            if let Some(summary) = self.summary(&reason, window) {
                write.push(summary);
            }
        }
        open.insert(
            reason,
            Window {
                ends: now + self.window,
                folded: 0,
                last: None,
            },
        );
        write.push(event);
        write
    }

    /// The summaries of windows that ended by now, which are closed.
    pub(crate) fn due(&self) -> Vec<AuditEvent> {
        let now = self.clock.now();
        self.take(|window| window.ends <= now)
    }

    /// The summaries of every open window, which are closed (at shutdown).
    pub(crate) fn drain(&self) -> Vec<AuditEvent> {
        self.take(|_| true)
    }

    fn take(&self, ended: impl Fn(&Window) -> bool) -> Vec<AuditEvent> {
        let mut open = self.open.lock();
        let mut summaries = Vec::new();
        open.retain(|reason, window| {
            if !ended(window) {
                return true;
            }
            summaries.extend(self.summary(reason, window));
            false
        });
        summaries
    }

    /// The entry counting the refusals folded in `window`, if any were.
    fn summary(&self, reason: &Reason, window: &Window) -> Option<AuditEvent> {
        let last = window.last.as_ref()?;
        let mut summary =
            AuditEvent::new(reason.user.as_ref(), reason.action.clone(), Outcome::Denied)
                .field("repeated", window.folded)
                .field("window_seconds", self.window.as_secs_f64());
        if let Some(detail) = &reason.detail {
            summary = summary.field("policy", detail.as_str());
        }
        if let Some(status) = last.status_code {
            summary = summary.status(status);
        }
        if let Some(id) = &last.request_id {
            summary = summary.request_id(id.as_str());
        }
        if let Some(key) = &last.idempotency_key {
            summary = summary.idempotency_key(key.as_str());
        }
        Some(summary)
    }
}

#[cfg(test)]
mod tests {
    use tollgate_clock::ManualClock;

    use super::*;

    fn reason(user: &str) -> Reason {
        Reason {
            user: Arc::from(user),
            action: Action::RATE_LIMITED,
            detail: Some("payments".to_owned()),
        }
    }

    fn refusal(user: &str) -> AuditEvent {
        AuditEvent::new(user, Action::RATE_LIMITED, Outcome::Denied).status(429)
    }

    #[test]
    fn a_flood_is_one_entry_and_a_count_per_window() {
        let clock = ManualClock::new();
        let digest = RefusalDigest::new(Duration::from_millis(50), Arc::new(clock.clone()));
        let mut written = 0;
        for _ in 0..1_000 {
            written += digest.admit(reason("mallory"), refusal("mallory")).len();
        }
        assert_eq!(written, 1, "only the first is written at once");
        assert_eq!(digest.admit(reason("alice"), refusal("alice")).len(), 1);
        clock.advance(Duration::from_millis(49));
        assert!(digest.due().is_empty(), "both windows are still open");
        clock.advance(Duration::from_millis(1));
        let due = digest.due();
        assert_eq!(due.len(), 1, "alice's window folded nothing");
        assert_eq!(due[0].fields["repeated"], 999);
        assert_eq!(due[0].fields["policy"], "payments");
        assert_eq!(due[0].status_code, Some(429));
        assert!(digest.drain().is_empty());
    }

    #[test]
    fn a_new_window_writes_the_previous_count_first() {
        let clock = ManualClock::new();
        let digest = RefusalDigest::new(Duration::from_millis(20), Arc::new(clock.clone()));
        digest.admit(reason("mallory"), refusal("mallory"));
        digest.admit(reason("mallory"), refusal("mallory"));
        clock.advance(Duration::from_millis(20));
        let written = digest.admit(reason("mallory"), refusal("mallory"));
        assert_eq!(written.len(), 2);
        assert_eq!(written[0].fields["repeated"], 1);
        assert!(!written[1].fields.contains_key("repeated"));
    }
}
