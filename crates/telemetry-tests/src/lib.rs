//! A capturing `tracing` subscriber and the `metrics` debugging recorder, for tests that check
//! what the libraries report with their `tracing` and `metrics` features on.
//!
//! ```
//! let (captured, result) = telemetry_tests::capture(|| {
//!     let span = tracing::debug_span!("work", answer = tracing::field::Empty);
//!     span.record("answer", 42);
//!     span.in_scope(|| tracing::debug!(step = 1, "halfway"));
//!     7
//! });
//! assert_eq!(result, 7);
//! let work = captured.span("work").expect("the span");
//! assert_eq!(work.field("answer"), Some("42"));
//! let event = captured.event("halfway").expect("the event");
//! assert_eq!(event.span.as_deref(), Some("work"));
//! assert_eq!(event.field("step"), Some("1"));
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A span or an event as the subscriber saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// The span's name, or the event's message.
    pub name: String,
    /// Its level.
    pub level: Level,
    /// Its fields (a span's as finally recorded), formatted.
    pub fields: BTreeMap<String, String>,
    /// For an event, the name of the span it happened in.
    pub span: Option<String>,
}

impl Captured {
    /// A field's formatted value.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// Everything captured, in order of creation.
#[derive(Clone, Debug, Default)]
pub struct Capture {
    spans: Arc<Mutex<Vec<Captured>>>,
    events: Arc<Mutex<Vec<Captured>>>,
}

impl Capture {
    /// Every span named `name`.
    pub fn spans(&self, name: &str) -> Vec<Captured> {
        let spans = self.spans.lock();
        spans.iter().filter(|s| s.name == name).cloned().collect()
    }

    /// The last span named `name`.
    pub fn span(&self, name: &str) -> Option<Captured> {
        self.spans(name).pop()
    }

    /// Every event whose message is `message`.
    pub fn events(&self, message: &str) -> Vec<Captured> {
        let events = self.events.lock();
        events
            .iter()
            .filter(|e| e.name == message)
            .cloned()
            .collect()
    }

    /// The last event whose message is `message`.
    pub fn event(&self, message: &str) -> Option<Captured> {
        self.events(message).pop()
    }

    /// Every event at `level` or more severe.
    pub fn at_least(&self, level: Level) -> Vec<Captured> {
        let events = self.events.lock();
        events
            .iter()
            .filter(|e| e.level <= level)
            .cloned()
            .collect()
    }
}

thread_local! {
    /// Where this thread's spans and events go while [`capture`] runs.
    static CURRENT: std::cell::RefCell<Option<Capture>> = const { std::cell::RefCell::new(None) };
}

/// Runs `work` on this thread capturing every span and event down to DEBUG; returns what it
/// captured and what `work` returned.
///
/// One global subscriber serves every test and hands each thread's spans and events to that
/// thread's capture: a subscriber per test (`with_default`) races with tests on other threads
/// over tracing's cached interest in each call site, and loses spans now and then.
pub fn capture<T>(work: impl FnOnce() -> T) -> (Capture, T) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::registry()
            .with(CaptureLayer)
            .with(tracing_subscriber::filter::LevelFilter::DEBUG);
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    });
    let capture = Capture::default();
    CURRENT.with(|current| *current.borrow_mut() = Some(capture.clone()));
    let result = work();
    CURRENT.with(|current| *current.borrow_mut() = None);
    (capture, result)
}

fn current() -> Option<Capture> {
    CURRENT.with(|current| current.borrow().clone())
}

/// Runs `work` on this thread with the `metrics` debugging recorder installed; returns every
/// series it recorded as `(name, labels, value)`, labels as sorted `key=value` pairs, and what
/// `work` returned.
pub fn measure<T>(work: impl FnOnce() -> T) -> (Vec<Series>, T) {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let result = metrics::with_local_recorder(&recorder, work);
    let series = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (_, key) = key.into_parts();
            let mut labels: Vec<String> = key
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            labels.sort();
            let value = match value {
                metrics_util::debugging::DebugValue::Counter(n) => n as f64,
                metrics_util::debugging::DebugValue::Gauge(g) => g.into_inner(),
                metrics_util::debugging::DebugValue::Histogram(h) => h.len() as f64,
            };
            Series {
                name: key.name().to_owned(),
                labels,
                value,
            }
        })
        .collect();
    (series, result)
}

/// One recorded series: a counter's count, a gauge's value, or a histogram's sample count.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The metric's name.
    pub name: String,
    /// Its labels, `key=value`, sorted.
    pub labels: Vec<String>,
    /// Its value.
    pub value: f64,
}

/// Finds the series `name` with exactly `labels` (in any order) in `series`.
pub fn find<'a>(series: &'a [Series], name: &str, labels: &[&str]) -> Option<&'a Series> {
    let mut wanted: Vec<&str> = labels.to_vec();
    wanted.sort_unstable();
    series.iter().find(|s| {
        s.name == name
            && s.labels
                .iter()
                .map(String::as_str)
                .eq(wanted.iter().copied())
    })
}

struct CaptureLayer;

/// Where a span's record is: its capture and its index in [`Capture::spans`], kept in the
/// span's extensions.
struct Index(Capture, usize);

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for CaptureLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(capture) = current() else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let index = {
            let mut spans = capture.spans.lock();
            spans.push(Captured {
                name: attrs.metadata().name().to_owned(),
                level: *attrs.metadata().level(),
                fields: fields.0,
                span: None,
            });
            spans.len() - 1
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Index(capture, index));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let extensions = span.extensions();
        let Some(Index(capture, index)) = extensions.get::<Index>() else {
            return;
        };
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let Some(captured) = capture.spans.lock().get_mut(*index) {
            captured.fields.extend(fields.0);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(capture) = current() else { return };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let name = fields.0.remove("message").unwrap_or_default();
        let span = ctx.event_span(event).map(|span| span.name().to_owned());
        capture.events.lock().push(Captured {
            name,
            level: *event.metadata().level(),
            fields: fields.0,
            span,
        });
    }
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}
