//! Audit events as JSON lines on any writer (a file, stdout, a pipe to a log shipper).

use std::fmt;
use std::io::Write;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::{AuditEvent, AuditSink, Error};

/// Writes one JSON object per line. Writes are synchronous and short; wrap a file in a
/// `BufWriter` and call [`flush`](AuditSink::flush) at shutdown.
pub struct JsonLinesSink<W> {
    writer: Mutex<W>,
}

impl<W> fmt::Debug for JsonLinesSink<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesSink").finish_non_exhaustive()
    }
}

impl<W: Write + Send> JsonLinesSink<W> {
    /// A sink writing to `writer`.
    pub fn new(writer: W) -> Self {
        JsonLinesSink {
            writer: Mutex::new(writer),
        }
    }

    /// The writer back (after a final flush).
    pub fn into_inner(self) -> W {
        self.writer.into_inner()
    }
}

#[async_trait]
impl<W: Write + Send> AuditSink for JsonLinesSink<W> {
    async fn record(&self, event: AuditEvent) -> Result<(), Error> {
        let mut line = serde_json::to_vec(&event).map_err(|e| Error::Sink(Box::new(e)))?;
        line.push(b'\n');
        // One write_all per event under the lock, so lines never interleave.
        let write = async { self.writer.lock().write_all(&line) };
        crate::telemetry::write("json_lines", 1, write)
            .await
            .map_err(|e| Error::Sink(Box::new(e)))
    }

    async fn flush(&self) -> Result<(), Error> {
        self.writer
            .lock()
            .flush()
            .map_err(|e| Error::Sink(Box::new(e)))
    }
}
