//! What a tapped request becomes: [`Pending`] is built when the request arrives
//! (only while someone taps), travels with the response, and at the response's
//! end turns into one [`Event`], a JSON line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::Request;
use serde::Serialize;

use super::Hub;
use crate::metrics::ServiceMetrics;

/// The attempt that ended a forwarded request: where it went and after how many
/// retries. Set by the forwarder, only on a tapped request.
#[derive(Debug, Clone, Copy)]
pub struct Attempted {
    pub endpoint: SocketAddr,
    /// Whether the endpoint has an identity: then a proxy that holds a
    /// certificate dials it with mTLS.
    pub identified: bool,
    pub retries: u32,
}

/// A tapped request on its way: what was known when it arrived.
pub struct Pending {
    hub: Arc<Hub>,
    started: Instant,
    direction: &'static str,
    source: Option<String>,
    service: String,
    route: String,
    method: String,
    authority: String,
    path: String,
    /// Inbound: whether the caller came in over mTLS; outbound: set from the
    /// [`Attempted`] hop.
    tls: bool,
    /// A gRPC status the response headers carried (a trailers-only response).
    grpc_status: Option<u16>,
    /// `None` when the proxy answered itself, before any attempt.
    attempted: Option<Attempted>,
}

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

impl Pending {
    /// `source`: the caller's identity (inbound) or this proxy's (outbound).
    pub fn new<B>(
        hub: Arc<Hub>,
        request: &Request<B>,
        metrics: &ServiceMetrics,
        source: Option<String>,
        started: Instant,
    ) -> Pending {
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                let host = request.headers().get(http::header::HOST)?;
                host.to_str().ok()
            })
            .unwrap_or("");
        let inbound = metrics.direction() == crate::metrics::Direction::Inbound.as_str();
        Pending {
            hub,
            started,
            direction: metrics.direction(),
            tls: inbound && source.is_some(),
            source,
            service: metrics.service().to_owned(),
            route: metrics.route().to_owned(),
            method: request.method().as_str().to_owned(),
            authority: authority.to_owned(),
            path: request.uri().path().to_owned(),
            grpc_status: None,
            attempted: None,
        }
    }

    pub fn attempted(&mut self, hop: Attempted) {
        self.attempted = Some(hop);
    }

    /// The gRPC status of the response headers (trailers-only responses).
    pub fn set_grpc_status(&mut self, status: Option<u16>) {
        self.grpc_status = status;
    }

    /// Publishes the finished request. `grpc_status`: from the trailers.
    pub fn finish(self, status: u16, grpc_status: Option<u16>) {
        let latency = self.started.elapsed();
        let hop = self.attempted;
        let event = Event {
            time: rfc3339(SystemTime::now()),
            direction: self.direction,
            source: self.source.as_deref(),
            service: &self.service,
            endpoint: hop.map(|h| h.endpoint.to_string()),
            method: &self.method,
            authority: &self.authority,
            path: &self.path,
            status,
            grpc_status: grpc_status.or(self.grpc_status),
            latency_ms: latency.as_secs_f64() * 1000.0,
            retries: hop.map_or(0, |h| h.retries),
            route: &self.route,
            tls: match (self.direction, hop) {
                ("outbound", Some(hop)) => hop.identified && self.source.is_some(),
                _ => self.tls,
            },
        };
        self.hub.publish(&event);
    }
}

impl Event<'_> {
    /// The event as one line of JSON, newline included.
    pub fn line(&self) -> bytes::Bytes {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line.into()
    }
}

/// `2026-12-05T07:30:01.123Z`.
pub fn rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since.subsec_millis()
    )
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
