//! The one shutdown primitive: a signal every listener and task watches, and a count
//! of the work still in flight so the drainer knows when it may exit.
//!
//! `Drain::signal` flips the watch; listeners stop accepting, connections finish or
//! notice and close politely. Each piece of in-flight work holds a [`Watch`] clone;
//! `Drain::wait` resolves when every clone is dropped (or the caller's deadline fires).

use tokio::sync::{mpsc, watch};

pub struct Drain {
    signal: watch::Sender<bool>,
    // Never sent on: the channel closes when the last `Watch` (holding a sender) drops.
    done_rx: mpsc::Receiver<()>,
    done_tx: Option<mpsc::Sender<()>>,
}

/// Held by in-flight work; tells it when draining started.
#[derive(Clone, Debug)]
pub struct Watch {
    signal: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
}

impl Drain {
    pub fn new() -> Drain {
        let (signal, _) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(1);
        Drain {
            signal,
            done_rx,
            done_tx: Some(done_tx),
        }
    }

    pub fn watch(&self) -> Watch {
        Watch {
            signal: self.signal.subscribe(),
            _done: self.done_tx.clone().unwrap_or_else(|| mpsc::channel(1).0),
        }
    }

    /// Starts draining; new watches made after this see it at once.
    pub fn signal(&mut self) {
        self.signal.send_replace(true);
        self.done_tx = None;
    }

    /// Resolves when every watch has been dropped. Call after `signal`.
    pub async fn wait(&mut self) {
        let _ = self.done_rx.recv().await;
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Watch {
    /// Resolves once draining has started.
    pub async fn signaled(&mut self) {
        let _ = self.signal.wait_for(|draining| *draining).await;
    }

    pub fn is_draining(&self) -> bool {
        *self.signal.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_resolves_only_after_every_watch_is_dropped() {
        let mut drain = Drain::new();
        let mut first = drain.watch();
        let second = drain.watch();
        let task = tokio::spawn(async move {
            first.signaled().await;
            assert!(first.is_draining());
        });
        drain.signal();
        task.await.expect("watcher saw the signal");
        let mut waiting = Box::pin(drain.wait());
        assert!(futures::poll!(&mut waiting).is_pending());
        drop(second);
        waiting.await;
    }
}
