//! Tap: a live stream of the proxy's finished HTTP requests, one JSON line each,
//! for `GET /tap` on the admin server (`weftctl tap`).
//!
//! # Layout
//! - [`Hub`] (here): who is tapping, and handing each finished request to them.
//! - [`event`]: the line a tapped request becomes ([`event::Event`]), from its
//!   [`crate::record::Record`].
//! - [`filter`]: a subscriber's query (`namespace`, `service`, `path`, `method`,
//!   `max_rps`, `sample`) and its rate cap.
//!
//! Nobody tapping costs a request one relaxed load ([`Hub::is_tapped`]): nothing is
//! built or allocated until that count is not zero. Someone tapping is bounded: a
//! subscriber gets at most `max_rps` events a second into a queue of [`QUEUE`],
//! and what does not fit is dropped and counted
//! (`weft_tap_events_dropped_total{reason}`), never waited for; at most
//! [`MAX_TAPS`] taps run at once. The request path publishes from the workers; the
//! admin server reads on the control runtime.

pub mod event;
pub mod filter;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::mpsc;

use self::event::Event;
use self::filter::{Bucket, Filter};

/// Taps running at once, per proxy: each costs every tapped request a filter
/// check and a serialisation.
pub const MAX_TAPS: usize = 8;

/// Events queued per subscriber before the next ones are dropped.
pub const QUEUE: usize = 1024;

const DROPPED: &str = "weft_tap_events_dropped_total";

/// Every tap of this proxy.
pub struct Hub {
    /// The subscriber count, the one thing the request path reads when nobody taps.
    taps: AtomicUsize,
    /// Swapped whole on subscribe and unsubscribe (rare); read per tapped request.
    subscribers: ArcSwap<Vec<Arc<Subscriber>>>,
    /// Serialises subscribe and unsubscribe, so that two changes do not lose one
    /// another; a std Mutex, held for a copy of the list, never across an await.
    changing: Mutex<()>,
    next_id: AtomicU64,
    dropped_rate: metrics::Counter,
    dropped_full: metrics::Counter,
}

struct Subscriber {
    id: u64,
    filter: Filter,
    // A std Mutex: held to take a token, never across an await.
    bucket: Mutex<Bucket>,
    events: mpsc::Sender<Bytes>,
}

/// One tap: its events as JSON lines, until it is dropped (which unsubscribes).
pub struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    pub events: mpsc::Receiver<Bytes>,
}

#[derive(Debug, thiserror::Error)]
#[error("{MAX_TAPS} taps are running already")]
pub struct TooManyTaps;

impl Hub {
    /// Registers the drop counters, so call it after the metrics recorder is installed.
    pub fn new() -> Hub {
        let dropped = |reason: &'static str| metrics::counter!(DROPPED, "reason" => reason);
        Hub {
            taps: AtomicUsize::new(0),
            subscribers: ArcSwap::from_pointee(Vec::new()),
            changing: Mutex::new(()),
            next_id: AtomicU64::new(0),
            dropped_rate: dropped("rate"),
            dropped_full: dropped("queue_full"),
        }
    }

    /// Whether anyone taps: the request path's only cost while nobody does.
    /// Relaxed: a request that misses a tap starting this instant is not tapped.
    #[inline]
    pub fn is_tapped(&self) -> bool {
        self.taps.load(Ordering::Relaxed) != 0
    }

    pub fn subscribe(self: &Arc<Self>, filter: Filter) -> Result<Subscription, TooManyTaps> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.subscribers.load_full();
        if current.len() >= MAX_TAPS {
            return Err(TooManyTaps);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, events) = mpsc::channel(QUEUE);
        let mut next = (*current).clone();
        next.push(Arc::new(Subscriber {
            id,
            bucket: Mutex::new(Bucket::new(filter.max_rps)),
            filter,
            events: sender,
        }));
        self.taps.store(next.len(), Ordering::Relaxed);
        self.subscribers.store(Arc::new(next));
        Ok(Subscription {
            hub: self.clone(),
            id,
            events,
        })
    }

    fn unsubscribe(&self, id: u64) {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = (*self.subscribers.load_full()).clone();
        next.retain(|s| s.id != id);
        self.taps.store(next.len(), Ordering::Relaxed);
        self.subscribers.store(Arc::new(next));
    }

    /// Hands a finished request to every subscriber whose filter takes it; the
    /// line is written once, for the first that does.
    pub fn publish(&self, event: &Event<'_>) {
        let subscribers = self.subscribers.load();
        let mut line: Option<Bytes> = None;
        for subscriber in subscribers.iter() {
            if !subscriber.filter.matches(event) || !subscriber.filter.sampled() {
                continue;
            }
            let admitted = subscriber
                .bucket
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(std::time::Instant::now());
            if !admitted {
                self.dropped_rate.increment(1);
                continue;
            }
            let line = line.get_or_insert_with(|| event.line()).clone();
            if subscriber.events.try_send(line).is_err() {
                // Full, or the tap is going away (its receiver was dropped).
                self.dropped_full.increment(1);
            }
        }
    }
}

impl Default for Hub {
    fn default() -> Hub {
        Hub::new()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id);
    }
}
