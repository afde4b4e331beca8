//! What a tapped request becomes: one [`Event`], a JSON line, made from the
//! request's [`crate::record::Record`] when its response ends.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// One finished request, as a tap sees it.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    /// When the response ended, RFC 3339 (UTC, milliseconds).
    pub time: String,
    pub direction: &'a str,
    /// Inbound: the caller's SPIFFE ID when it came over mTLS; outbound: this
    /// proxy's own, when it has one.
    pub source: Option<&'a str>,
    /// The service (`namespace/name`) the request went to; empty for passthrough.
    pub service: &'a str,
    /// The endpoint that answered; absent when the proxy answered itself.
    pub endpoint: Option<String>,
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub grpc_status: Option<u16>,
    pub latency_ms: f64,
    pub retries: u32,
    /// The route (`namespace/name`) that chose the service; empty when none did.
    pub route: &'a str,
    pub tls: bool,
}

impl Event<'_> {
    /// The event as one line of JSON, newline included.
    pub fn line(&self) -> bytes::Bytes {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line.into()
    }
}

/// `2026-12-05T07:30:01.123Z` (years past 9999 wrap). Written digit by digit:
/// `format!` took about 3,500 instructions, paid by every access log line.
pub fn rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let mut text = *b"0000-00-00T00:00:00.000Z";
    let fields = [
        (0..4, year.rem_euclid(10_000) as u64),
        (5..7, u64::from(month)),
        (8..10, u64::from(day)),
        (11..13, of_day / 3600),
        (14..16, of_day % 3600 / 60),
        (17..19, of_day % 60),
        (20..23, u64::from(since.subsec_millis())),
    ];
    for (range, value) in fields {
        digits(&mut text[range], value);
    }
    text.iter().map(|&b| char::from(b)).collect()
}

/// Writes `value`'s last `out.len()` decimal digits, zero-padded.
pub fn digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
