//! Peak-EWMA load of one endpoint: a latency estimate that jumps up at once on a slow
//! response (by at most [`PEAK_STEP`] per answer, so a lone outlier is not taken
//! for the endpoint's speed) and decays slowly back down, times the number of
//! requests in flight.
//!
//! This is the cost P2C compares. The estimate also decays towards zero while an
//! endpoint gets no responses, so one that was slow once is tried again later rather
//! than starved forever.
//!
//! A failure counts as at least [`FAILURE_RTT`], and as twice the current estimate
//! when that is more (up to [`FAILURE_PEAK`]), so failures in a row push an endpoint
//! away faster than one failure does. Without that, an endpoint that answers 503 in
//! 0.1 ms looks like the fastest of its set, and a least-latency balancer sends it
//! most of the traffic, failing requests a healthy endpoint would have served
//! (outlier detection only ejects after consecutive failures, which an endpoint
//! failing every other request never reaches). Like any estimate it decays, so the
//! endpoint is tried again once it may have recovered.
//!
//! Every field is an atomic and updates are plain load/store, not compare-and-swap:
//! two responses landing at the same instant may lose one sample, which shifts an
//! estimate by a fraction and is cheaper than contending on a lock per response.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How fast old samples fade: after this long an observation weighs 1/e.
pub const DECAY: Duration = Duration::from_secs(10);

/// The estimate of an endpoint that has not answered yet. Linkerd uses 30 ms too:
/// high enough that a fresh endpoint is not flooded before its first answer.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// The least a failed attempt counts as: as slow as an endpoint never heard from.
pub const FAILURE_RTT: Duration = DEFAULT_RTT;

/// The most one slow answer raises an estimate by, as a factor: just under the
/// balancer's tie (1.5x), so that one outlier of timing (a descheduled moment, a
/// GC pause) does not make an endpoint lose every comparison for a decay period,
/// while answers that stay slow compound (1.4x, 2x, 2.7x...) and push it away
/// within a few requests. Failures are not bounded by it.
pub const PEAK_STEP: f64 = 1.4;

/// The most that doubling on failure raises an estimate to (a failure that itself
/// took longer still counts as long as it took).
pub const FAILURE_PEAK: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Load {
    pending: AtomicU32,
    /// Latency estimate in nanoseconds, as `f64` bits.
    estimate: AtomicU64,
    /// When `estimate` was last written, in [`now`] nanoseconds.
    updated: AtomicU64,
    /// Whether any response was observed; the first replaces the default outright
    /// (blending it in would take a decay period to forget a made-up number).
    measured: AtomicBool,
}

impl Load {
    pub fn new(now: u64) -> Load {
        Load {
            pending: AtomicU32::new(0),
            estimate: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            updated: AtomicU64::new(now),
            measured: AtomicBool::new(false),
        }
    }

    /// A request or connection was sent to this endpoint.
    pub fn begin(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    /// It finished (answered or failed); pairs with one [`Load::begin`].
    pub fn end(&self) {
        // Saturating, so that an unpaired `end` cannot wrap the count to u32::MAX.
        let _ = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| p.checked_sub(1));
    }

    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Records how long a response took.
    pub fn observe(&self, rtt: Duration, now: u64) {
        self.record(rtt.as_nanos() as f64, now, PEAK_STEP);
    }

    /// Records a sample; a rise above the estimate is taken at once, up to `step`
    /// times the estimate.
    fn record(&self, rtt: f64, now: u64, step: f64) {
        let previous = f64::from_bits(self.estimate.load(Ordering::Relaxed));
        let first = !self.measured.swap(true, Ordering::Relaxed);
        let next = if first {
            rtt
        } else if rtt > previous {
            // The "peak" part: a slower answer counts at once.
            rtt.min(previous * step)
        } else {
            let w = self.weight_of_old(now);
            previous * w + rtt * (1.0 - w)
        };
        self.estimate.store(next.to_bits(), Ordering::Relaxed);
        self.updated.store(now, Ordering::Relaxed);
    }

    /// Records a failed attempt (a 5xx or gRPC UNAVAILABLE answer, a reset, a
    /// connect error, a timeout) that took `rtt`.
    pub fn observe_failure(&self, rtt: Duration, now: u64) {
        let current =
            f64::from_bits(self.estimate.load(Ordering::Relaxed)) * self.weight_of_old(now);
        let doubled = (2.0 * current).min(FAILURE_PEAK.as_nanos() as f64);
        let counted = (rtt.max(FAILURE_RTT).as_nanos() as f64).max(doubled);
        // A failure counts in full: it is no outlier of timing.
        self.record(counted, now, f64::INFINITY);
    }

    /// The cost of sending one more request here, in nanoseconds (lower is better).
    pub fn cost(&self, now: u64) -> f64 {
        let estimate = f64::from_bits(self.estimate.load(Ordering::Relaxed));
        estimate * self.weight_of_old(now) * f64::from(self.pending() + 1)
    }

    /// The latency estimate at `now` in nanoseconds, decayed; `None` while nothing
    /// was observed (the balancer then prices the endpoint like its rival).
    pub fn estimate(&self, now: u64) -> Option<f64> {
        if !self.measured.load(Ordering::Relaxed) {
            return None;
        }
        let estimate = f64::from_bits(self.estimate.load(Ordering::Relaxed));
        Some(estimate * self.weight_of_old(now))
    }

    /// Forgets every observation, as for an endpoint never heard from: for one that
    /// comes back after it could not be reached, whose old estimate says nothing
    /// about the process now answering.
    pub fn forget(&self, now: u64) {
        self.estimate
            .store((DEFAULT_RTT.as_nanos() as f64).to_bits(), Ordering::Relaxed);
        self.updated.store(now, Ordering::Relaxed);
        self.measured.store(false, Ordering::Relaxed);
    }

    fn weight_of_old(&self, now: u64) -> f64 {
        let elapsed = now.saturating_sub(self.updated.load(Ordering::Relaxed)) as f64;
        (-elapsed / DECAY.as_nanos() as f64).exp()
    }
}

/// Monotonic nanoseconds since the first call in this process: cheap to store in an
/// atomic, unlike an `Instant`.
pub fn now() -> u64 {
    at(Instant::now())
}

/// [`now`] as it was at `instant`, so that a clock read made for something else
/// (a request's start) serves here too.
pub fn at(instant: Instant) -> u64 {
    let epoch = *EPOCH.get_or_init(|| instant);
    instant.saturating_duration_since(epoch).as_nanos() as u64
}

/// The instant [`now`] counts from.
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_slow_answer_counts_at_once_and_fades_slowly() {
        let load = Load::new(0);
        load.observe(Duration::from_millis(1), 60_000 * MS);
        let fast = load.cost(60_000 * MS);
        assert!(fast < 2.0 * MS as f64, "settled near 1 ms: {fast}");
        // One slow answer raises it by at most PEAK_STEP...
        load.observe(Duration::from_millis(100), 60_001 * MS);
        let once = load.cost(60_001 * MS);
        assert!(
            once < 1.5 * fast,
            "one outlier stays within a tie: {once} vs {fast}"
        );
        assert!(once > 1.3 * fast, "but counts at once: {once} vs {fast}");
        // ...slow answers in a row compound, up to the slow latency itself.
        for i in 2..20 {
            load.observe(Duration::from_millis(100), (60_000 + i) * MS);
        }
        let peak = load.cost(60_020 * MS);
        assert!(peak >= 99.0 * MS as f64, "slow answers in a row: {peak}");
        // One fast answer right after barely moves it...
        load.observe(Duration::from_millis(1), 60_021 * MS);
        assert!(load.cost(60_021 * MS) > 90.0 * MS as f64);
        // ...but time does.
        assert!(load.cost(60_000 * MS + 30_000 * MS) < 10.0 * MS as f64);
    }

    #[test]
    fn the_first_answer_replaces_the_default() {
        let load = Load::new(0);
        load.observe(Duration::from_micros(200), MS);
        assert!(load.cost(MS) < 0.3 * MS as f64);
    }

    #[test]
    fn a_fast_failure_costs_at_least_an_unknown_endpoint() {
        let load = Load::new(0);
        load.observe(Duration::from_micros(100), MS);
        load.observe_failure(Duration::from_micros(100), 2 * MS);
        assert!(load.cost(2 * MS) >= 29.0 * MS as f64);
        // Failures in a row double it, up to a second...
        load.observe_failure(Duration::from_micros(100), 3 * MS);
        assert!(load.cost(3 * MS) >= 59.0 * MS as f64);
        for i in 4..20 {
            load.observe_failure(Duration::from_micros(100), i * MS);
        }
        let peak = load.cost(20 * MS);
        assert!(
            (990.0 * MS as f64..=1000.0 * MS as f64).contains(&peak),
            "{peak}"
        );
        // ...and a slower failure counts as slow as it was.
        load.observe_failure(Duration::from_secs(3), 21 * MS);
        assert!(load.cost(21 * MS) >= 2_990.0 * MS as f64);
        // Time still brings it back.
        assert!(load.cost(21 * MS + 100_000 * MS) < MS as f64);
    }

    #[test]
    fn pending_requests_multiply_the_cost_and_end_saturates() {
        let load = Load::new(0);
        let idle = load.cost(0);
        load.begin();
        load.begin();
        assert!((load.cost(0) - 3.0 * idle).abs() < 1.0);
        load.end();
        load.end();
        load.end();
        assert_eq!(load.pending(), 0);
    }
}
