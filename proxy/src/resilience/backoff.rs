//! Backoff between retries: exponential with full jitter (a uniform draw below the
//! exponential bound), so retries from many clients spread out instead of arriving
//! in waves.

use std::time::Duration;

use rand::Rng;

/// The pause before retry number `retry` (1 for the first retry).
pub fn delay(retry: u32, base: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let exponent = retry.saturating_sub(1).min(20);
    let bound = base.saturating_mul(1 << exponent).min(max);
    if bound.is_zero() {
        return bound;
    }
    Duration::from_nanos(rng.random_range(0..=bound.as_nanos() as u64))
}
