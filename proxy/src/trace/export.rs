//! Sending finished spans to their collectors, off the data path: one bounded
//! [`Queue`] and one OTLP/gRPC exporter task per distinct collector address,
//! batched, on a thread of their own (`weft-trace`) that the proxy starts when the
//! first service turns tracing on.
//!
//! A request's worker only offers its span to the queue: when the queue is full (a
//! slow or unreachable collector) the span is dropped and counted
//! (`weft_trace_spans_dropped_total{reason="queue_full"}`), never waited for. A
//! batch the collector refuses or that times out is dropped and counted too
//! (`reason="export_failed"`). Spans still queued when the proxy exits are lost.
//!
//! The exporter collects the queue every [`TICK`], or as soon as it is half full,
//! rather than waiting on it: a receiver that waits is woken by every span, a
//! thread switch on the worker's core per sampled request, which costs the worker
//! more than the span itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, Notify};

/// Spans waiting per collector before new ones are dropped.
pub const QUEUE: usize = 4096;
/// Spans sent in one export call at most.
const BATCH: usize = 512;
/// How often the exporter collects the queue when it is less than half full.
const TICK: Duration = Duration::from_millis(250);
/// An export call's limit, so a collector that stalls cannot hold the queue longer.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

const DROPPED: &str = "weft_trace_spans_dropped_total";
const EXPORTED: &str = "weft_trace_spans_exported_total";

/// Who a proxy's spans say recorded them: OTLP's resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Recorder {
    /// `service.name`: the proxy's workload service.
    pub service: String,
    /// `service.namespace`.
    pub namespace: String,
}

/// The queues of every collector this proxy sends to, made on first use and kept
/// while some service's tracer holds them.
#[derive(Default)]
pub struct Collectors {
    /// A std Mutex: taken when a snapshot is applied, never on a request.
    queues: Mutex<HashMap<(String, Recorder), Weak<Queue>>>,
    runtime: OnceLock<Option<tokio::runtime::Handle>>,
}

/// The way into one collector's exporter task.
pub struct Queue {
    spans: mpsc::Sender<SpanData>,
    /// Wakes the exporter before its tick once the queue is half full.
    half_full: Arc<Notify>,
    scope: InstrumentationScope,
    dropped: metrics::Counter,
}

impl Queue {
    /// Offers a finished span; a full queue drops it.
    pub fn push(&self, span: SpanData) {
        if self.spans.try_send(span).is_err() {
            self.dropped.increment(1);
        }
        if self.spans.capacity() < QUEUE / 2 {
            self.half_full.notify_one();
        }
    }

    pub fn scope(&self) -> &InstrumentationScope {
        &self.scope
    }
}

impl Queue {
    /// A queue of `capacity` spans with no exporter behind it, for tests.
    #[cfg(test)]
    pub fn detached(capacity: usize) -> (Arc<Queue>, mpsc::Receiver<SpanData>) {
        let (spans, receiver) = mpsc::channel(capacity);
        let queue = Queue {
            spans,
            half_full: Arc::new(Notify::new()),
            scope: InstrumentationScope::builder("test").build(),
            dropped: metrics::Counter::noop(),
        };
        (Arc::new(queue), receiver)
    }
}

impl Collectors {
    /// The queue to `collector` (`host:port`) for spans recorded as `recorder`;
    /// `None` when the exporter thread cannot start.
    pub fn queue(&self, collector: &str, recorder: &Recorder) -> Option<Arc<Queue>> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.retain(|_, queue| queue.strong_count() > 0);
        let key = (collector.to_owned(), recorder.clone());
        if let Some(queue) = queues.get(&key).and_then(Weak::upgrade) {
            return Some(queue);
        }
        let runtime = self.runtime.get_or_init(start_thread).as_ref()?;
        let (sender, receiver) = mpsc::channel(QUEUE);
        let half_full = Arc::new(Notify::new());
        let queue = Arc::new(Queue {
            spans: sender,
            half_full: half_full.clone(),
            scope: InstrumentationScope::builder("weft-proxy")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            dropped: metrics::counter!(DROPPED, "reason" => "queue_full"),
        });
        runtime.spawn(export(
            receiver,
            half_full,
            collector.to_owned(),
            recorder.clone(),
        ));
        queues.insert(key, Arc::downgrade(&queue));
        Some(queue)
    }
}

/// The exporters' thread and runtime: apart from the workers, so encoding and
/// sending batches never competes with requests on their threads.
fn start_thread() -> Option<tokio::runtime::Handle> {
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let started = std::thread::Builder::new()
        .name("weft-trace".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "the trace exporter's runtime did not start");
                    return;
                }
            };
            let _ = handle_tx.send(runtime.handle().clone());
            // Runs the exporter tasks until the process exits.
            runtime.block_on(std::future::pending::<()>());
        });
    if let Err(error) = started {
        tracing::error!(%error, "the trace exporter's thread did not start");
        return None;
    }
    handle_rx.recv().ok()
}

/// One collector's exporter: every [`TICK`], or once the queue is half full, what
/// the queue holds goes out in batches of up to [`BATCH`] spans. Ends when every
/// tracer that used the queue is gone.
async fn export(
    mut spans: mpsc::Receiver<SpanData>,
    half_full: Arc<Notify>,
    collector: String,
    recorder: Recorder,
) {
    let exported = metrics::counter!(EXPORTED);
    let failed = metrics::counter!(DROPPED, "reason" => "export_failed");
    let built = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{collector}"))
        .with_timeout(EXPORT_TIMEOUT)
        .build();
    let mut exporter = match built {
        Ok(exporter) => exporter,
        Err(error) => {
            tracing::warn!(%collector, %error, "no trace exporter; its spans are dropped");
            while let Some(_span) = spans.recv().await {
                failed.increment(1);
            }
            return;
        }
    };
    exporter.set_resource(
        &Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", recorder.service),
                KeyValue::new("service.namespace", recorder.namespace),
            ])
            .build(),
    );
    tracing::info!(%collector, "exporting trace spans");
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = half_full.notified() => {}
        }
        // Collected with try_recv: a receiver that never waits registers no waker,
        // so a span sent in the meantime wakes nobody.
        let mut open = true;
        while open {
            let mut batch = Vec::with_capacity(BATCH);
            while batch.len() < BATCH {
                match spans.try_recv() {
                    Ok(span) => batch.push(span),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            let count = batch.len() as u64;
            let full = batch.len() == BATCH;
            match exporter.export(batch).await {
                Ok(()) => exported.increment(count),
                Err(error) => {
                    failed.increment(count);
                    tracing::debug!(%collector, %error, "a batch of spans was not exported");
                }
            }
            if !full {
                break;
            }
        }
        if !open {
            return;
        }
    }
}
