//! The upstream response inactivity timeout (`--response-idle-timeout-ms`): how
//! long an attempt waits with nothing moving between the proxy and the upstream,
//! for the response head and then between pieces of the response body. Without
//! it, a silent upstream with no `requestMs` would hold its client, its
//! connection and a request slot forever.
//!
//! The clock runs only while the proxy waits on the upstream: not while a
//! request body waits for its client (the request body timeout is for that),
//! nor while a response body waits for the downstream to ask for more.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The upstream sent nothing for the timeout.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for {0:?}")]
pub struct Idle(pub Duration);

#[derive(Debug)]
pub struct IdleTimer {
    /// Zero: no timeout.
    timeout: Duration,
    /// When the current wait began; `None` while bytes move.
    since: Option<Instant>,
    /// Made on the first wait (an exchange that never waits costs no timer),
    /// then moved along from the head's wait to the body's.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    pub fn new(timeout: Duration) -> IdleTimer {
        IdleTimer {
            timeout,
            since: None,
            sleep: None,
        }
    }

    /// A new exchange begins with this timeout (zero: none), its wait counted
    /// from its own start; the timer itself is kept.
    pub fn start(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.since = None;
    }

    /// Something moved (or the wait is not the upstream's): the next wait counts
    /// from its own start.
    pub fn progress(&mut self) {
        self.since = None;
    }

    /// Something moved at `at`, seen only now: a wait begun before then counts
    /// from then.
    pub fn progress_at(&mut self, at: Instant) {
        if let Some(since) = self.since.as_mut() {
            *since = (*since).max(at);
        }
    }

    /// To be called where the caller is about to wait for the upstream: ready,
    /// with the timeout, once this wait has lasted that long.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Duration> {
        if self.timeout.is_zero() {
            return Poll::Pending;
        }
        let since = *self.since.get_or_insert_with(Instant::now);
        // A timeout too large to add is as good as none.
        let Some(deadline) = since.checked_add(self.timeout) else {
            return Poll::Pending;
        };
        match poll_until(&mut self.sleep, deadline, cx) {
            Poll::Ready(()) => Poll::Ready(self.timeout),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Polls a timer made on first use for `deadline`, moved when the deadline moved
/// (a later deadline only extends the registered timer, no lock).
pub(super) fn poll_until(
    sleep: &mut Option<Pin<Box<Sleep>>>,
    deadline: Instant,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let sleep = match sleep {
        Some(sleep) => {
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            sleep
        }
        None => sleep.insert(Box::pin(tokio::time::sleep_until(deadline))),
    };
    sleep.as_mut().poll(cx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    /// Waits for the timer to expire: how long that took.
    async fn expiry(timer: &mut IdleTimer) -> Duration {
        let started = Instant::now();
        poll_fn(|cx| timer.poll_expired(cx)).await;
        started.elapsed()
    }

    #[tokio::test]
    async fn a_wait_expires_after_the_timeout_and_wakes_its_task() {
        let mut timer = IdleTimer::new(Duration::from_millis(100));
        let waited = expiry(&mut timer).await;
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }

    #[tokio::test]
    async fn progress_starts_the_count_again() {
        let timeout = Duration::from_millis(300);
        let mut timer = IdleTimer::new(timeout);
        let early = tokio::time::timeout(timeout / 2, expiry(&mut timer)).await;
        assert!(early.is_err(), "expired early");
        timer.progress();
        let waited = expiry(&mut timer).await;
        assert!(waited >= timeout, "counted from the first wait: {waited:?}");
    }

    #[tokio::test]
    async fn progress_seen_late_counts_from_when_it_happened() {
        let timeout = Duration::from_millis(300);
        let mut timer = IdleTimer::new(timeout);
        let early = tokio::time::timeout(timeout / 2, expiry(&mut timer)).await;
        assert!(early.is_err(), "expired early");
        let moved = Instant::now();
        timer.progress_at(moved - timeout / 4);
        let waited = expiry(&mut timer).await;
        // Counted from the first wait, it would have expired after a half.
        assert!(waited >= timeout * 3 / 4, "{waited:?}");
    }

    #[tokio::test]
    async fn zero_means_no_timeout() {
        let mut timer = IdleTimer::new(Duration::ZERO);
        let expired = tokio::time::timeout(Duration::from_millis(100), expiry(&mut timer)).await;
        assert!(expired.is_err());
        assert!(timer.sleep.is_none(), "no timer for no timeout");
    }
}
