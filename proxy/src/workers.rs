//! The data-path runtime: the worker threads that run every listener and connection.
//!
//! One worker (`--workers 1`, the usual sidecar setting) gets a current-thread runtime
//! driven by a thread of its own; more workers get tokio's multi-thread scheduler. The
//! data path spawns through a [`tokio::runtime::Handle`] and calls `tokio::spawn`, which
//! behave the same on both, and it never uses `block_in_place` (the one call that a
//! current-thread runtime refuses). A single worker on the multi-thread scheduler pays
//! for machinery it cannot use: atomic task states shared with stealers, a search for
//! work to steal, and wake-ups that go through the shared injection queue; on the
//! current-thread runtime a wake-up from the worker itself is a local push.

use std::future::Future;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;

/// How long tasks still parked at the end (idle pooled connections) may take to go.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// The data-path runtime, whichever scheduler it uses.
pub enum Workers {
    /// Two or more workers.
    MultiThread(Runtime),
    /// One worker: a current-thread runtime, driven by `thread` until `stop` fires.
    CurrentThread {
        handle: Handle,
        stop: oneshot::Sender<()>,
        thread: JoinHandle<()>,
    },
}

impl Workers {
    /// Builds the runtime and, for one worker, starts its thread. `setup` runs on the
    /// runtime before any other task (binding the listeners), so that an error there
    /// (a port already taken) stops the proxy before anything is served.
    pub fn start<F, T, E>(workers: usize, setup: F) -> anyhow::Result<(Self, T)>
    where
        F: Future<Output = Result<T, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        if workers > 1 {
            let runtime = Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .thread_name("weft-worker")
                .build()?;
            let ready = runtime.block_on(setup)?;
            return Ok((Self::MultiThread(runtime), ready));
        }
        let runtime = Builder::new_current_thread().enable_all().build()?;
        // Bound here, on this thread: the sockets are registered with the runtime's IO
        // driver, which moves to the worker thread with the runtime.
        let ready = runtime.block_on(setup)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("weft-worker".into())
            .spawn(move || {
                // Spawned tasks run only while this thread is inside `block_on`; an
                // error or a dropped sender both mean the proxy is stopping.
                let _ = runtime.block_on(stopped);
                runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
            })?;
        Ok((
            Self::CurrentThread {
                handle,
                stop,
                thread,
            },
            ready,
        ))
    }

    /// Where the control runtime spawns the data path.
    pub fn handle(&self) -> &Handle {
        match self {
            Self::MultiThread(runtime) => runtime.handle(),
            Self::CurrentThread { handle, .. } => handle,
        }
    }

    /// Called once everything has drained: tasks still parked get
    /// [`SHUTDOWN_TIMEOUT`] to go, then the worker threads end.
    pub fn shutdown(self) {
        match self {
            Self::MultiThread(runtime) => runtime.shutdown_timeout(SHUTDOWN_TIMEOUT),
            Self::CurrentThread { stop, thread, .. } => {
                let _ = stop.send(());
                if thread.join().is_err() {
                    tracing::error!("the data-path worker thread panicked");
                }
            }
        }
    }
}
