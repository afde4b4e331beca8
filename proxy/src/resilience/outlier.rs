//! Passive health (outlier detection) of one endpoint, as seen by this proxy:
//! consecutive failures (connect errors, timeouts, 5xx, gRPC UNAVAILABLE), or
//! optionally a failure percentage over its last few outcomes (for an endpoint
//! that fails often but never twice in a row), eject it for a time that grows by
//! the base time with each ejection, up to a cap.
//!
//! When its time is up the endpoint is back in the set on probation: its next
//! outcome decides (a failure ejects it again at once, longer; a success clears
//! the probation). After staying healthy for the cap, its ejection count is
//! forgotten, so an endpoint that failed once long ago starts from the base again.
//!
//! How many endpoints may be ejected at once is the destination's business (it
//! knows the set); [`Outlier::record`] asks it through `may_eject`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use weft_proto::model::OutlierDetection;

#[derive(Debug, Default)]
pub struct Outlier {
    consecutive: AtomicU32,
    ejections: AtomicU32,
    /// `now` nanoseconds until which the endpoint is ejected; 0: never was.
    ejected_until: AtomicU64,
    probation: AtomicBool,
    /// The failure-percentage detector's window: outcomes and failures since it
    /// last reached `failure_percentage_min_requests` (then both restart).
    window_total: AtomicU32,
    window_failed: AtomicU32,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Outlier {
    pub fn is_ejected(&self, now: u64) -> bool {
        now < self.ejected_until.load(Ordering::Acquire)
    }

    /// Until when the endpoint is ejected (0 when it never was).
    pub fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Ordering::Acquire)
    }

    /// Records the outcome of one attempt; returns the new ejection's end when this
    /// outcome ejected the endpoint.
    pub fn record(
        &self,
        success: bool,
        now: u64,
        config: &OutlierDetection,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<u64> {
        let until = self.ejected_until.load(Ordering::Acquire);
        let rate_exceeded = self.window(success, config);
        if success && !rate_exceeded {
            self.consecutive.store(0, Ordering::Relaxed);
            if now >= until {
                self.probation.store(false, Ordering::Relaxed);
                if until != 0 && now.saturating_sub(until) > nanos(config.max_ejection) {
                    self.ejections.store(0, Ordering::Relaxed);
                }
            }
            return None;
        }
        if now < until {
            return None;
        }
        let failures = if success {
            0
        } else {
            self.consecutive.fetch_add(1, Ordering::AcqRel) + 1
        };
        let on_probation = self.probation.load(Ordering::Relaxed);
        let consecutive = !success
            && config.consecutive_failures != 0
            && (failures >= config.consecutive_failures || on_probation);
        if !consecutive && !rate_exceeded {
            return None;
        }
        if !may_eject() {
            return None;
        }
        let ejections = self.ejections.fetch_add(1, Ordering::AcqRel) + 1;
        let length = config
            .base_ejection
            .saturating_mul(ejections)
            .min(config.max_ejection);
        let end = now.saturating_add(nanos(length));
        // Two failures racing past the threshold: only one ejects.
        self.ejected_until
            .compare_exchange(until, end, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        self.consecutive.store(0, Ordering::Relaxed);
        self.probation.store(true, Ordering::Relaxed);
        Some(end)
    }
}

impl Outlier {
    /// Counts an outcome in the failure-percentage window; true when the window
    /// just filled with too many failures.
    fn window(&self, success: bool, config: &OutlierDetection) -> bool {
        if config.failure_percentage_threshold == 0 {
            return false;
        }
        let failed = if success {
            self.window_failed.load(Ordering::Relaxed)
        } else {
            self.window_failed.fetch_add(1, Ordering::Relaxed) + 1
        };
        let total = self.window_total.fetch_add(1, Ordering::Relaxed) + 1;
        if total < config.failure_percentage_min_requests {
            return false;
        }
        self.window_total.store(0, Ordering::Relaxed);
        self.window_failed.store(0, Ordering::Relaxed);
        u64::from(failed) * 100 >= u64::from(config.failure_percentage_threshold) * u64::from(total)
    }
}

/// How many of `total` endpoints may be ejected at once: `percent` of them, and at
/// least one (as Envoy allows) unless `percent` is 0.
pub fn max_ejected(total: usize, percent: u32) -> usize {
    if percent == 0 {
        return 0;
    }
    (total * percent as usize / 100).max(1)
}
