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

use crate::live::LiveDuration;

/// One refusal: what it is folded with (the same user, action and detail — a rate limit's
/// policy) and what its entry carries, borrowed from the request, so a refusal that is only
/// counted builds nothing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Denial<'a> {
    pub(crate) user: &'a Arc<str>,
    pub(crate) action: &'a Action,
    pub(crate) detail: Option<&'a str>,
    pub(crate) status: Option<u16>,
    pub(crate) request_id: Option<&'a str>,
    pub(crate) idempotency_key: Option<&'a str>,
}

impl<'a> Denial<'a> {
    /// The refusal `event` records, for `user` (`detail`: a rate limit's policy).
    pub(crate) fn of(event: &'a AuditEvent, user: &'a Arc<str>, detail: Option<&'a str>) -> Self {
        Denial {
            user,
            action: &event.action,
            detail,
            status: event.status_code,
            request_id: event.request_id.as_deref(),
            idempotency_key: event.idempotency_key.as_deref(),
        }
    }
}

/// What to write for one refusal.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// The count of the reason's previous window, which just ended.
    pub(crate) summary: Option<AuditEvent>,
    /// The refusal opened a window: its own entry is written now.
    pub(crate) opened: bool,
}

impl Admitted {
    const OPENED: Admitted = Admitted {
        summary: None,
        opened: true,
    };
    const FOLDED: Admitted = Admitted {
        summary: None,
        opened: false,
    };
}

/// One reason's open window.
#[derive(Debug)]
struct Window {
    action: Action,
    detail: Option<Box<str>>,
    ends: Timestamp,
    folded: u64,
    /// The latest refusal folded: its status, key and request id go into the summary. Its
    /// buffers are reused from one refusal to the next.
    last: Last,
}

#[derive(Debug, Default)]
struct Last {
    status: Option<u16>,
    request_id: Option<String>,
    idempotency_key: Option<String>,
}

impl Last {
    fn set(&mut self, denial: &Denial<'_>) {
        self.status = denial.status;
        overwrite(&mut self.request_id, denial.request_id);
        overwrite(&mut self.idempotency_key, denial.idempotency_key);
    }
}

/// `slot` becomes `value`, in the buffer it already has when it has one.
fn overwrite(slot: &mut Option<String>, value: Option<&str>) {
    match (slot.as_mut(), value) {
        (Some(buffer), Some(value)) => {
            buffer.clear();
            buffer.push_str(value);
        }
        (_, value) => *slot = value.map(str::to_owned),
    }
}

/// The open windows, per user. Bounded: users are the configured ones, actions and details
/// (policy names) come from the configuration, and a window is dropped when it ends.
#[derive(Debug)]
pub(crate) struct RefusalDigest {
    /// `audit.refusal_window`, replaced by a reload: windows opened from then on are as long.
    pub(crate) window: LiveDuration,
    clock: Arc<dyn Clock>,
    /// foldhash: looked up on every refusal, by a configured user's name.
    open: Mutex<HashMap<Arc<str>, Vec<Window>, foldhash::fast::RandomState>>,
}

impl RefusalDigest {
    /// Windows `window` long, on `clock`.
    pub(crate) fn new(window: Duration, clock: Arc<dyn Clock>) -> Self {
        RefusalDigest {
            window: LiveDuration::new(window),
            clock,
            open: Mutex::new(HashMap::default()),
        }
    }

    /// Counts `denial` in its reason's window. The answer says what to write now: the summary
    /// of the reason's previous window if that ended with refusals folded, and whether the
    /// refusal's own entry opens a new window (otherwise it is only counted, and nothing of
    /// it is built).
    pub(crate) fn admit(&self, denial: &Denial<'_>) -> Admitted {
        let now = self.clock.now();
        let mut open = self.open.lock();
        let windows = match open.get_mut(denial.user.as_ref()) {
            Some(windows) => windows,
            // The user's first refusal: the one insert by an owned key.
            None => open.entry(Arc::clone(denial.user)).or_default(),
        };
        let same = |w: &Window| &w.action == denial.action && w.detail.as_deref() == denial.detail;
        let Some(window) = windows.iter_mut().find(|w| same(w)) else {
            windows.push(Window {
                action: denial.action.clone(),
                detail: denial.detail.map(Box::from),
                ends: now + self.window.get(),
                folded: 0,
                last: Last::default(),
            });
            return Admitted::OPENED;
        };
        if now < window.ends {
            window.folded += 1;
            window.last.set(denial);
            return Admitted::FOLDED;
        }
        let summary = self.summary(denial.user, window);
        window.ends = now + self.window.get();
        window.folded = 0;
        Admitted {
            summary,
            opened: true,
        }
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
        open.retain(|user, windows| {
            windows.retain(|window| {
                if !ended(window) {
                    return true;
                }
                summaries.extend(self.summary(user, window));
                false
            });
            !windows.is_empty()
        });
        summaries
    }

    /// The entry counting the refusals folded in `window`, if any were.
    fn summary(&self, user: &str, window: &Window) -> Option<AuditEvent> {
        if window.folded == 0 {
            return None;
        }
        let last = &window.last;
        let mut summary = AuditEvent::new(user, window.action.clone(), Outcome::Denied)
            .field("repeated", window.folded)
            .field("window_seconds", self.window.get().as_secs_f64());
        if let Some(detail) = &window.detail {
            summary = summary.field("policy", detail.as_ref());
        }
        if let Some(status) = last.status {
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

    /// Admits a rate-limit refusal of `user` under the policy `payments`: the entries to write.
    fn admit(digest: &RefusalDigest, user: &str) -> Vec<AuditEvent> {
        let event = AuditEvent::new(user, Action::RATE_LIMITED, Outcome::Denied).status(429);
        let user = Arc::from(user);
        let admitted = digest.admit(&Denial::of(&event, &user, Some("payments")));
        let own = admitted.opened.then_some(event);
        admitted.summary.into_iter().chain(own).collect()
    }

    #[test]
    fn a_flood_is_one_entry_and_a_count_per_window() {
        let clock = ManualClock::new();
        let digest = RefusalDigest::new(Duration::from_millis(50), Arc::new(clock.clone()));
        let mut written = 0;
        for _ in 0..1_000 {
            written += admit(&digest, "mallory").len();
        }
        assert_eq!(written, 1, "only the first is written at once");
        assert_eq!(admit(&digest, "alice").len(), 1);
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
        admit(&digest, "mallory");
        admit(&digest, "mallory");
        clock.advance(Duration::from_millis(20));
        let written = admit(&digest, "mallory");
        assert_eq!(written.len(), 2);
        assert_eq!(written[0].fields["repeated"], 1);
        assert!(!written[1].fields.contains_key("repeated"));
    }
}
