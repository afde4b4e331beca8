//! Access logs: one JSON line on stdout per sampled request (or TCP connection) of
//! a service whose `telemetry.accessLog` is on (see [`weft_proto::model::telemetry`]).
//!
//! # Layout
//! - [`Writer`] (here): the bounded queue between the data path and the one thread
//!   that writes stdout.
//! - [`connection`]: the line of a TCP connection, written at its close.
//! - [`line`]: the line's fields (Envoy's default format's, named as Istio's JSON
//!   access log names them, plus Weft's own) and the response flags.
//!
//! The data path never waits on stdout: a line goes into a queue of [`QUEUE`]
//! lines with `try_send`, and a line that does not fit is dropped and counted
//! (`weft_access_log_lines_dropped_total`). One thread, started with the first
//! line, writes them through a buffer that it flushes whenever the queue is empty,
//! so a burst costs few `write`s and a quiet proxy's lines are out at once. A
//! thread rather than a task: writing stdout blocks, and neither runtime should
//! carry that.
//!
//! Whether a request is logged at all is its destination's to say (one relaxed
//! load, [`crate::dataplane::destination::Destination::access_log`]); nothing is
//! built for a request that is not.

pub mod connection;
pub mod line;
#[cfg(test)]
mod tests;

use std::io::Write;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;

use bytes::Bytes;

/// Lines waiting for the writer before the next ones are dropped.
pub const QUEUE: usize = 4096;

pub const DROPPED: &str = "weft_access_log_lines_dropped_total";

/// The proxy's access log: a queue to the thread that writes it.
pub struct Writer {
    /// Whether the control plane may turn access logs on (`--access-log off` says
    /// no, whatever the services say).
    pub enabled: bool,
    queue: OnceLock<Option<SyncSender<Bytes>>>,
    /// Where the lines go; stdout but for tests.
    sink: fn() -> Box<dyn Write + Send>,
    dropped: metrics::Counter,
}

impl Writer {
    /// Registers the drop counter, so call it after the metrics recorder is installed.
    pub fn new(enabled: bool) -> Writer {
        Writer::with_sink(enabled, || Box::new(std::io::stdout()))
    }

    pub fn with_sink(enabled: bool, sink: fn() -> Box<dyn Write + Send>) -> Writer {
        Writer {
            enabled,
            queue: OnceLock::new(),
            sink,
            dropped: metrics::counter!(DROPPED),
        }
    }

    /// Queues one line (newline included); drops and counts it when the queue is
    /// full (then `false`).
    pub fn write(&self, line: Bytes) -> bool {
        let queue = self.queue.get_or_init(|| self.start());
        let sent = match queue {
            Some(queue) => queue.try_send(line),
            None => Err(TrySendError::Disconnected(line)),
        };
        if sent.is_err() {
            self.dropped.increment(1);
        }
        sent.is_ok()
    }

    /// Starts the writer thread; `None` when the system would not start one (then
    /// every line is dropped and counted, and the proxy goes on).
    #[cold]
    fn start(&self) -> Option<SyncSender<Bytes>> {
        let (sender, lines) = mpsc::sync_channel(QUEUE);
        let sink = (self.sink)();
        let started = std::thread::Builder::new()
            .name("weft-access-log".to_owned())
            .spawn(move || drain(lines, sink));
        match started {
            Ok(_) => Some(sender),
            Err(error) => {
                tracing::warn!(%error, "access log: cannot start its writer; lines are dropped");
                None
            }
        }
    }
}

/// Writes lines as they come, flushing when none is waiting; ends when the
/// writer is dropped or stdout fails (then lines are dropped, counted by the
/// sender as the queue fills).
fn drain(lines: Receiver<Bytes>, sink: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, sink);
    while let Ok(line) = lines.recv() {
        let mut result = out.write_all(&line);
        while result.is_ok() {
            match lines.try_recv() {
                Ok(line) => result = out.write_all(&line),
                Err(_) => break,
            }
        }
        if let Err(error) = result.and_then(|()| out.flush()) {
            tracing::warn!(%error, "access log: writing stdout failed; lines are dropped");
            return;
        }
    }
}
