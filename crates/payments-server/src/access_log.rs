//! The access log of requests no key vouches for — refused ones without a valid key, probes,
//! the public routes, unknown paths and methods — and of every refusal (a 4xx, a caller's
//! too: a rate-limited client repeats its request at will), folded into one line per interval
//! with their counts, as the audit trail folds refusals. A client controls how many such
//! requests come and from how many addresses, never how many lines they write: at most one line per interval,
//! of at most [`MAX_KINDS`] counts (a kind is a method label, a route template and a status, all
//! bounded), however fast or from wherever they come. Each request still has its own line at
//! debug level.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::extract::MatchedPath;
use parking_lot::Mutex;

/// Kinds counted apart in one interval; the rest are counted together as `other`.
pub(crate) const MAX_KINDS: usize = 24;

/// Requests of strangers, counted per kind until the interval ends.
#[derive(Debug)]
pub(crate) struct StrangerLog {
    interval: Duration,
    current: Mutex<Interval>,
}

#[derive(Debug)]
struct Interval {
    opened: Instant,
    total: u64,
    kinds: Vec<Kind>,
    other: u64,
}

/// One kind of request and how many came.
#[derive(Debug)]
struct Kind {
    method: &'static str,
    route: Option<MatchedPath>,
    status: u16,
    count: u64,
}

impl Kind {
    fn route(&self) -> &str {
        self.route.as_ref().map_or("unmatched", MatchedPath::as_str)
    }
}

/// What one interval saw, written as one line.
#[derive(Debug)]
pub(crate) struct Summary {
    seconds: u64,
    total: u64,
    kinds: String,
}

impl Summary {
    /// Writes the line (INFO).
    pub(crate) fn log(&self) {
        tracing::info!(
            interval_s = self.seconds,
            requests = self.total,
            kinds = %self.kinds,
            "requests without a valid key or refused (counted per interval)"
        );
    }
}

impl StrangerLog {
    pub(crate) fn new(interval: Duration) -> Self {
        StrangerLog {
            interval,
            current: Mutex::new(Interval::new(Instant::now())),
        }
    }

    /// Counts one request; the previous interval's summary if this request closed it.
    pub(crate) fn count(
        &self,
        method: &'static str,
        route: Option<&MatchedPath>,
        status: u16,
    ) -> Option<Summary> {
        let now = Instant::now();
        let mut current = self.current.lock();
        let closed = self.close_if_due(&mut current, now);
        current.add(method, route, status);
        closed
    }

    /// The summary of an interval that has ended with requests in it (called every second, so
    /// the last interval of a flood is written even when nothing follows it).
    pub(crate) fn due(&self) -> Option<Summary> {
        let mut current = self.current.lock();
        self.close_if_due(&mut current, Instant::now())
    }

    fn close_if_due(&self, current: &mut Interval, now: Instant) -> Option<Summary> {
        if now.duration_since(current.opened) < self.interval {
            return None;
        }
        let ended = std::mem::replace(current, Interval::new(now));
        (ended.total > 0).then(|| ended.summary(self.interval))
    }
}

impl Interval {
    fn new(opened: Instant) -> Self {
        Interval {
            opened,
            total: 0,
            kinds: Vec::new(),
            other: 0,
        }
    }

    fn add(&mut self, method: &'static str, route: Option<&MatchedPath>, status: u16) {
        self.total += 1;
        let route_text = route.map_or("unmatched", MatchedPath::as_str);
        let found = self
            .kinds
            .iter()
            .position(|k| k.status == status && k.method == method && k.route() == route_text);
        match found {
            Some(at) => self.kinds[at].count += 1,
            None if self.kinds.len() < MAX_KINDS => self.kinds.push(Kind {
                method,
                route: route.cloned(),
                status,
                count: 1,
            }),
            None => self.other += 1,
        }
    }

    /// `GET /health 200 ×1532, GET unmatched 404 ×88`, most frequent first.
    fn summary(mut self, interval: Duration) -> Summary {
        self.kinds.sort_by_key(|kind| std::cmp::Reverse(kind.count));
        let mut kinds = String::new();
        for kind in &self.kinds {
            if !kinds.is_empty() {
                kinds.push_str(", ");
            }
            let _ = write!(
                kinds,
                "{} {} {} ×{}",
                kind.method,
                kind.route(),
                kind.status,
                kind.count
            );
        }
        if self.other > 0 {
            let _ = write!(kinds, ", other ×{}", self.other);
        }
        Summary {
            seconds: interval.as_secs(),
            total: self.total,
            kinds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_summary_per_interval_of_bounded_size() {
        let log = StrangerLog::new(Duration::from_secs(3_600));
        for i in 0..10_000_u16 {
            let status = 200 + i % 400;
            assert!(
                log.count("GET", None, status).is_none(),
                "the interval is open"
            );
        }
        let mut current = log.current.lock();
        current.opened -= Duration::from_secs(3_601);
        let summary = log.close_if_due(&mut current, Instant::now()).expect("due");
        assert_eq!(summary.total, 10_000);
        assert!(
            summary
                .kinds
                .ends_with(&format!(", other ×{}", 10_000 - 24 * 25))
        );
        assert!(summary.kinds.len() < 1_024, "{}", summary.kinds.len());
        assert!(
            log.close_if_due(&mut current, Instant::now()).is_none(),
            "nothing new"
        );
    }
}
