//! The one shutdown primitive: a signal every listener and task watches, and a count
//! of the work still in flight so the drainer knows when it may exit.
//!
//! `Drain::signal` flips the watch; listeners stop accepting, connections finish or
//! notice and close politely. Each piece of in-flight work holds a [`Watch`] clone;
//! `Drain::wait` resolves when every clone is dropped (or the caller's deadline fires).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;
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

    /// [`Watch::signaled`] for a `select!` whose other branch wakes the task often
    /// (an HTTP connection: twice per request). Polling the watch costs a lock
    /// each time; this polls it again only after it woke the task itself.
    pub fn signaled_on_own_wake(&mut self) -> OwnWake<impl Future<Output = ()> + '_> {
        OwnWake {
            inner: Box::pin(self.signaled()),
            flag: Arc::new(WakeFlag {
                woken: AtomicBool::new(false),
                task: AtomicWaker::new(),
            }),
            polled: false,
        }
    }
}

/// A future polled only on its first poll and after it woke the task itself.
pub struct OwnWake<F> {
    inner: Pin<Box<F>>,
    flag: Arc<WakeFlag>,
    polled: bool,
}

struct WakeFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> Future for OwnWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Registered before the flag is read: a wake between the two still
        // reaches the task, which then finds the flag set.
        this.flag.task.register(cx.waker());
        if this.polled && !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.polled = true;
        let waker = Waker::from(this.flag.clone());
        this.inner.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watch_polled_on_its_own_wake_sees_the_signal() {
        let mut drain = Drain::new();
        let mut watch = drain.watch();
        let (polled_tx, polled_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut signaled = std::pin::pin!(watch.signaled_on_own_wake());
            // Polled again and again by a busy neighbour: stays pending.
            for _ in 0..3 {
                assert!(futures::poll!(signaled.as_mut()).is_pending());
            }
            let _ = polled_tx.send(());
            signaled.await;
        });
        polled_rx.await.expect("the watch was polled");
        drain.signal();
        task.await.expect("the signal woke the watch");
    }

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
