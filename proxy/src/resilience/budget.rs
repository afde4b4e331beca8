//! The retry budget (DESIGN.md decision 8): retries may add at most a share of the
//! recent requests, plus a small floor per second, so that when every endpoint
//! fails the proxy does not multiply the outage by its retry count.
//!
//! The same window also bounds *moves* (a request sent to another endpoint after a
//! failed connect): they re-send no work, so they do not spend the retry budget,
//! but a generous bound of their own keeps a dead service from turning every
//! request into a connect to each of its endpoints.
//!
//! Counted in one-second buckets over a ten-second window (as Linkerd does), with
//! atomics only: a bucket is reset by whoever first sees it stale, and a race there
//! loses at most a few counts of one second, which a budget tolerates.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Seconds of history the budget looks at.
pub const WINDOW_SECONDS: u64 = 10;

#[derive(Debug, Default)]
struct Bucket {
    /// The second this bucket counts (seconds from the process epoch, plus one so
    /// that zero means never used).
    second: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
    moves: AtomicU32,
}

#[derive(Debug, Default)]
pub struct RetryBudget {
    buckets: [Bucket; WINDOW_SECONDS as usize],
}

impl RetryBudget {
    fn bucket(&self, second: u64) -> &Bucket {
        let bucket = &self.buckets[(second % WINDOW_SECONDS) as usize];
        let tag = second + 1;
        let seen = bucket.second.load(Ordering::Acquire);
        if seen != tag
            && bucket
                .second
                .compare_exchange(seen, tag, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            bucket.requests.store(0, Ordering::Relaxed);
            bucket.retries.store(0, Ordering::Relaxed);
            bucket.moves.store(0, Ordering::Relaxed);
        }
        bucket
    }

    /// Counts one original request (not a retry).
    pub fn deposit(&self, second: u64) {
        self.bucket(second).requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget if the window allows it: retries stay
    /// within `percent` of the window's requests plus `floor_per_second` for each
    /// second of the window.
    pub fn withdraw(&self, second: u64, percent: u32, floor_per_second: u32) -> bool {
        self.take(second, percent, floor_per_second, |b| &b.retries)
    }

    /// Takes one move from its own bound, as [`RetryBudget::withdraw`] does for
    /// retries.
    pub fn withdraw_move(&self, second: u64, percent: u32, floor_per_second: u32) -> bool {
        self.take(second, percent, floor_per_second, |b| &b.moves)
    }

    fn take(
        &self,
        second: u64,
        percent: u32,
        floor_per_second: u32,
        spent: fn(&Bucket) -> &AtomicU32,
    ) -> bool {
        let current = self.bucket(second);
        let (mut requests, mut taken) = (0u64, 0u64);
        for bucket in &self.buckets {
            let tag = bucket.second.load(Ordering::Acquire);
            if tag != 0 && tag + WINDOW_SECONDS > second + 1 {
                requests += u64::from(bucket.requests.load(Ordering::Relaxed));
                taken += u64::from(spent(bucket).load(Ordering::Relaxed));
            }
        }
        let allowed =
            requests * u64::from(percent) / 100 + u64::from(floor_per_second) * WINDOW_SECONDS;
        if taken >= allowed {
            return false;
        }
        spent(current).fetch_add(1, Ordering::Relaxed);
        true
    }
}
