//! `weft.io/LocalRateLimit` on the data path: a token bucket per proxy and per
//! rule filter, holding `burst` tokens and refilled with `requests_per_unit` per
//! `unit`. A request takes a token or is answered 429 with `Retry-After` (gRPC:
//! `RESOURCE_EXHAUSTED`, trailers-only, with the same `retry-after` header), and
//! is never forwarded.
//!
//! The bucket starts full, so a burst of `burst` requests passes at once. It lives
//! in [`super::state::State`], keyed by route, rule and filter position, and is
//! carried over snapshot pushes that leave its limit unchanged: an unrelated push
//! does not hand every client a fresh burst. A changed limit starts a new, full
//! bucket.

use std::sync::Mutex;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode};
use weft_proto::model::route::LocalRateLimit;

use crate::metrics::RouteFilterMetrics;

use super::super::body::ProxyBody;
use super::answer;

const RESOURCE_EXHAUSTED: u16 = 8;

/// One rule filter's bucket, shared by every worker of the proxy.
#[derive(Debug)]
pub struct Bucket {
    pub limit: LocalRateLimit,
    // A std Mutex: held for a few arithmetic operations, never across an await;
    // uncontended it costs about as much as the atomics a lock-free bucket needs.
    tokens: Mutex<TokenBucket>,
}

impl Bucket {
    pub fn new(limit: LocalRateLimit, now_ns: u64) -> Bucket {
        Bucket {
            limit,
            tokens: Mutex::new(TokenBucket::full(limit, now_ns)),
        }
    }

    /// Takes a token at `now_ns`, or says how long until one is available.
    pub fn take(&self, now_ns: u64) -> Result<(), Duration> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.take(now_ns)
    }
}

/// Token-bucket arithmetic in integers. One token is `unit_ns` "scaled" units, so
/// a refill of `per_unit` tokens per `unit_ns` nanoseconds is exactly `per_unit`
/// scaled units per nanosecond: no rounding, whatever the rate.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_unit: u128,
    unit_ns: u128,
    capacity: u128,
    scaled: u128,
    last_ns: u64,
}

impl TokenBucket {
    pub fn full(limit: LocalRateLimit, now_ns: u64) -> TokenBucket {
        let unit_ns = limit.unit.duration().as_nanos();
        let capacity = u128::from(limit.burst.max(1)) * unit_ns;
        TokenBucket {
            per_unit: u128::from(limit.requests_per_unit.max(1)),
            unit_ns,
            capacity,
            scaled: capacity,
            last_ns: now_ns,
        }
    }

    /// Refills for the time since the last call, then takes one token; `Err` is
    /// the time until a token will be there. A clock that reads earlier than the
    /// last call (two workers racing to the lock) refills nothing.
    pub fn take(&mut self, now_ns: u64) -> Result<(), Duration> {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        self.scaled = (self.scaled + u128::from(elapsed) * self.per_unit).min(self.capacity);
        if self.scaled >= self.unit_ns {
            self.scaled -= self.unit_ns;
            return Ok(());
        }
        let missing = self.unit_ns - self.scaled;
        let wait = missing.div_ceil(self.per_unit);
        Err(Duration::from_nanos(
            u64::try_from(wait).unwrap_or(u64::MAX),
        ))
    }
}

/// `Retry-After` in whole seconds, rounded up (a client that waits that long finds
/// a token), at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    seconds.max(1)
}

/// Takes a token from `bucket`, or answers the request.
pub(super) fn apply(
    bucket: &Bucket,
    metrics: &RouteFilterMetrics,
    grpc: bool,
) -> Option<Response<ProxyBody>> {
    let wait = bucket.take(crate::balance::now()).err()?;
    metrics.rate_limited.increment(1);
    let mut response = answer(
        grpc,
        StatusCode::TOO_MANY_REQUESTS,
        RESOURCE_EXHAUSTED,
        "local rate limit exceeded",
    );
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        HeaderValue::from(retry_after_seconds(wait)),
    );
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::model::route::RateUnit;

    const SECOND: u64 = 1_000_000_000;

    fn limit(requests_per_unit: u32, unit: RateUnit, burst: u32) -> LocalRateLimit {
        LocalRateLimit {
            requests_per_unit,
            unit,
            burst,
        }
    }

    #[test]
    fn a_full_bucket_passes_its_burst_then_says_when_the_next_token_comes() {
        let mut bucket = TokenBucket::full(limit(10, RateUnit::Minute, 5), 0);
        for _ in 0..5 {
            assert_eq!(bucket.take(0), Ok(()));
        }
        // 10 a minute: one token every 6 s.
        assert_eq!(bucket.take(0), Err(Duration::from_secs(6)));
        assert_eq!(bucket.take(SECOND), Err(Duration::from_secs(5)));
        assert_eq!(bucket.take(6 * SECOND), Ok(()));
        assert_eq!(bucket.take(6 * SECOND), Err(Duration::from_secs(6)));
    }

    #[test]
    fn refill_stops_at_the_burst() {
        let mut bucket = TokenBucket::full(limit(100, RateUnit::Second, 3), 0);
        for _ in 0..3 {
            assert!(bucket.take(0).is_ok());
        }
        // An hour idle refills 3 tokens, not 360,000.
        let later = 3600 * SECOND;
        for _ in 0..3 {
            assert!(bucket.take(later).is_ok());
        }
        assert!(bucket.take(later).is_err());
    }

    #[test]
    fn a_steady_rate_is_held_exactly_over_time() {
        // 8 a second (a token every 125 ms), burst 1, a request every ms from 0
        // to 10 s: the first, then one per token, 1 + 80.
        let mut bucket = TokenBucket::full(limit(8, RateUnit::Second, 1), 0);
        let passed = (0..=10_000u64)
            .filter(|ms| bucket.take(ms * 1_000_000).is_ok())
            .count();
        assert_eq!(passed, 81);
        // 600 a minute with a burst of 100, asked 20 a second for a minute: the
        // burst, then 10 a second.
        let mut bucket = TokenBucket::full(limit(600, RateUnit::Minute, 100), 0);
        let passed = (0..1_200u64)
            .filter(|i| bucket.take(i * 50_000_000).is_ok())
            .count();
        assert!((100 + 590..=100 + 600).contains(&passed), "{passed}");
    }

    #[test]
    fn a_clock_read_late_refills_nothing_and_breaks_nothing() {
        let mut bucket = TokenBucket::full(limit(1, RateUnit::Second, 1), 10 * SECOND);
        assert!(bucket.take(10 * SECOND).is_ok());
        assert!(bucket.take(9 * SECOND).is_err());
        assert!(bucket.take(11 * SECOND).is_ok());
    }

    #[test]
    fn the_largest_limits_do_not_overflow() {
        let mut bucket = TokenBucket::full(limit(u32::MAX, RateUnit::Minute, u32::MAX), 0);
        assert!(bucket.take(u64::MAX).is_ok());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::from_nanos(1)), 1);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(6)), 6);
        assert_eq!(retry_after_seconds(Duration::from_millis(6_001)), 7);
    }

    #[test]
    fn beyond_the_limit_the_answer_is_429_or_resource_exhausted() {
        let metrics = RouteFilterMetrics::new("t/r".into());
        let bucket = Bucket::new(limit(1, RateUnit::Minute, 1), crate::balance::now());
        assert!(apply(&bucket, &metrics, false).is_none());
        let refused = apply(&bucket, &metrics, false).expect("limited");
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let seconds: u64 = refused.headers()["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=60).contains(&seconds), "{seconds}");
        let grpc = apply(&bucket, &metrics, true).expect("limited");
        assert_eq!(grpc.status(), StatusCode::OK);
        assert_eq!(grpc.headers()["grpc-status"], "8");
        assert!(grpc.headers().contains_key("retry-after"));
    }
}
