//! Whether an endpoint could be reached when last tried: a connect that is refused
//! or times out (or a failed TLS handshake) takes the endpoint out of rotation at
//! once for new requests, as Linkerd's fail-fast does, and a background probe (see
//! the data path's `probe`) brings it back the moment it accepts connections again.
//!
//! This is separate from outlier detection on purpose: a connect that fails is
//! certain evidence, needs no threshold of failures in a row, and needs no long
//! ejection to be safe, since the probe says exactly when it ends. So it does not
//! count against `maxEjectionPercent` either, which guards against false positives
//! among endpoints that do answer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Endpoints unreachable right now, over the whole process: while it is 0 (the
/// common case), picking skips looking at any endpoint's reachability.
static UNREACHABLE: AtomicUsize = AtomicUsize::new(0);

/// Whether any endpoint of any service is out of rotation for being unreachable.
pub fn any_unreachable() -> bool {
    UNREACHABLE.load(Ordering::Acquire) != 0
}

#[derive(Debug, Default)]
pub struct Reachability {
    unreachable: AtomicBool,
}

impl Reachability {
    pub fn is_unreachable(&self) -> bool {
        self.unreachable.load(Ordering::Acquire)
    }

    /// A connect failed. True when the endpoint was in rotation until now: the
    /// caller then starts the endpoint's one probe.
    pub fn lose(&self) -> bool {
        let was_reachable = !self.unreachable.swap(true, Ordering::AcqRel);
        if was_reachable {
            UNREACHABLE.fetch_add(1, Ordering::AcqRel);
        }
        was_reachable
    }

    /// A connect succeeded (the probe's, or a request's): back in rotation. True
    /// when it was out until now.
    pub fn regain(&self) -> bool {
        // Called after every success: a load first keeps the common case a read
        // of a shared cache line, not a write to it.
        if !self.is_unreachable() {
            return false;
        }
        let was_unreachable = self.unreachable.swap(false, Ordering::AcqRel);
        if was_unreachable {
            UNREACHABLE.fetch_sub(1, Ordering::AcqRel);
        }
        was_unreachable
    }
}

impl Drop for Reachability {
    fn drop(&mut self) {
        self.regain();
    }
}

/// How long the probe waits before its try number `round` (from 0): soon at
/// first, since most outages that refuse connections are restarts, then at most
/// every half second, so one dead endpoint costs each caller two connects a second.
pub fn probe_delay(round: u32) -> Duration {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_millis(500);
    FIRST.saturating_mul(1 << round.min(10)).min(MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losing_and_regaining_is_counted_once_each() {
        let before = UNREACHABLE.load(Ordering::Acquire);
        let r = Reachability::default();
        assert!(!r.is_unreachable());
        assert!(r.lose());
        assert!(!r.lose(), "a second failure starts no second probe");
        assert!(r.is_unreachable());
        assert!(any_unreachable());
        assert!(r.regain());
        assert!(!r.regain());
        assert!(r.lose());
        drop(r);
        // Other tests in this process may hold unreachable endpoints of their own,
        // but this one left nothing behind.
        assert!(UNREACHABLE.load(Ordering::Acquire) <= before);
    }

    #[test]
    fn the_probe_starts_soon_and_settles_at_half_a_second() {
        assert_eq!(probe_delay(0), Duration::from_millis(50));
        assert_eq!(probe_delay(1), Duration::from_millis(100));
        assert_eq!(probe_delay(3), Duration::from_millis(400));
        assert_eq!(probe_delay(4), Duration::from_millis(500));
        assert_eq!(probe_delay(u32::MAX), Duration::from_millis(500));
    }
}
