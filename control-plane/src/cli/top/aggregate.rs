//! Golden metrics per service from the proxies' counters: what `weftctl top` shows
//! for each `namespace/name`, computed over the INBOUND series (the server side of
//! the service, as `linkerd viz stat` shows a deployment); and per edge of the
//! service graph (who calls whom), computed over each caller's OUTBOUND series.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::parse::Sample;
use super::quantile::histogram_quantile;

const REQUESTS: &str = "weft_requests_total";
const RESPONSES: &str = "weft_responses_total";
const BUCKETS: &str = "weft_request_duration_seconds_bucket";
const ENDPOINTS: &str = "weft_endpoints";

/// One target's counters over one interval: how much each grew.
pub struct Window<'a> {
    /// The workload the target is the proxy of (its service, else its proxy id):
    /// the caller of what its outbound series count.
    pub source: &'a str,
    /// Seconds between the two scrapes.
    pub seconds: f64,
    pub increases: Vec<(&'a Sample, f64)>,
}

/// One row of `weftctl top`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceStats {
    /// `namespace/name`.
    pub service: String,
    /// Healthy endpoints as the data path sees them: the highest count any target
    /// reports (each proxy that routes to the service holds the same list).
    pub endpoints: u64,
    /// Requests per second received by the service's proxies.
    pub rps: f64,
    /// Share of responses that were neither 5xx nor a gRPC status other than OK;
    /// `None` without responses.
    pub success: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Share of requests that came in over mTLS; `None` without requests.
    pub tls: Option<f64>,
    /// The SPIFFE IDs of the mTLS callers that sent requests in the interval (the
    /// inbound `client_identity` label; `overflow` past the proxies' bound).
    pub client_identities: Vec<String>,
}

/// One edge of the service graph: the calls of one workload to one service, as its
/// own proxies counted them (retries and failover included: what the caller got).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EdgeStats {
    /// The calling workload: `namespace/name` of its service, else its proxy's id.
    pub source: String,
    /// `namespace/name`.
    pub destination: String,
    pub rps: f64,
    pub success: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The SPIFFE IDs of the endpoints that answered over mTLS in the interval
    /// (the outbound `dst_identity` label); empty for plaintext hops.
    pub dst_identities: Vec<String>,
}

#[derive(Default)]
struct Totals {
    rps: f64,
    requests: f64,
    tls_requests: f64,
    responses: f64,
    failures: f64,
    /// By the bucket's `le` label, summed over targets.
    buckets: BTreeMap<String, f64>,
    endpoints: u64,
    /// The peer identities of the series that grew: callers inbound, answering
    /// endpoints outbound.
    peers: BTreeSet<String>,
}

fn inbound_service(sample: &Sample) -> Option<&str> {
    let service = sample.label("service");
    (sample.label("direction") == "inbound" && !service.is_empty()).then_some(service)
}

/// The rows, sorted by service, for `windows` (targets scraped twice) and the
/// current samples of every target scraped this time; `namespace` keeps only the
/// services of one namespace.
pub fn aggregate(
    windows: &[Window<'_>],
    current: &[&[Sample]],
    namespace: Option<&str>,
) -> Vec<ServiceStats> {
    let mut by_service: BTreeMap<String, Totals> = BTreeMap::new();
    for samples in current {
        for sample in samples.iter().filter(|s| s.name == ENDPOINTS) {
            let service = sample.label("service");
            if service.is_empty() || sample.label("state") != "healthy" {
                continue;
            }
            let totals = by_service.entry(service.to_owned()).or_default();
            // A gauge, so no NaN/negative counts of endpoints.
            let healthy = if sample.value.is_finite() && sample.value > 0.0 {
                sample.value as u64
            } else {
                0
            };
            totals.endpoints = totals.endpoints.max(healthy);
        }
    }
    for window in windows {
        for (sample, increase) in &window.increases {
            let Some(service) = inbound_service(sample) else {
                continue;
            };
            let totals = by_service.entry(service.to_owned()).or_default();
            totals.add(sample, *increase, window.seconds);
        }
    }
    by_service
        .into_iter()
        .filter(|(service, _)| in_namespace(service, namespace))
        .map(|(service, totals)| stats(service, &totals))
        .collect()
}

/// The service graph's edges, sorted by source then destination, from the
/// callers' outbound series; `namespace` keeps the edges into one namespace's
/// services. Passthrough traffic (no service) is no edge, nor a service not called
/// in the window.
pub fn edges(windows: &[Window<'_>], namespace: Option<&str>) -> Vec<EdgeStats> {
    let mut by_edge: BTreeMap<(&str, &str), Totals> = BTreeMap::new();
    for window in windows {
        for (sample, increase) in &window.increases {
            let destination = sample.label("service");
            if sample.label("direction") != "outbound" || destination.is_empty() {
                continue;
            }
            let totals = by_edge.entry((window.source, destination)).or_default();
            totals.add(sample, *increase, window.seconds);
        }
    }
    // A proxy registers a series per service it may call; only calls make an edge.
    by_edge
        .into_iter()
        .filter(|((_, destination), totals)| {
            totals.requests > 0.0 && in_namespace(destination, namespace)
        })
        .map(|((source, destination), totals)| {
            let mut row = stats(destination.to_owned(), &totals);
            EdgeStats {
                dst_identities: std::mem::take(&mut row.client_identities),
                source: source.to_owned(),
                destination: row.service,
                rps: row.rps,
                success: row.success,
                p50_ms: row.p50_ms,
                p99_ms: row.p99_ms,
            }
        })
        .collect()
}

fn in_namespace(service: &str, namespace: Option<&str>) -> bool {
    namespace.is_none_or(|ns| service.split_once('/').is_some_and(|(n, _)| n == ns))
}

impl Totals {
    /// Adds one counter's increase over a window of `seconds`.
    fn add(&mut self, sample: &Sample, increase: f64, seconds: f64) {
        let peer = match sample.label("direction") {
            "inbound" => sample.label("client_identity"),
            _ => sample.label("dst_identity"),
        };
        if !peer.is_empty() && increase > 0.0 && !self.peers.contains(peer) {
            self.peers.insert(peer.to_owned());
        }
        match sample.name.as_str() {
            REQUESTS => {
                self.requests += increase;
                if seconds > 0.0 {
                    self.rps += increase / seconds;
                }
                if sample.label("tls") == "true" {
                    self.tls_requests += increase;
                }
            }
            // Requests the proxy answered itself (weft_request_errors_total) are
            // not added again: its rescue path also counts the response it sends
            // (502, 503, 504, a gRPC status), so they are already here.
            RESPONSES => {
                self.responses += increase;
                if is_failure(sample) {
                    self.failures += increase;
                }
            }
            BUCKETS => {
                *self
                    .buckets
                    .entry(sample.label("le").to_owned())
                    .or_default() += increase;
            }
            _ => {}
        }
    }
}

/// 5xx, or a gRPC status other than OK (as Linkerd counts gRPC failures).
fn is_failure(sample: &Sample) -> bool {
    let status: u16 = sample.label("status_code").parse().unwrap_or(0);
    let grpc = sample.label("grpc_status");
    status >= 500 || (!grpc.is_empty() && grpc != "0")
}

fn stats(service: String, totals: &Totals) -> ServiceStats {
    let share = |part: f64, whole: f64| (whole > 0.0).then(|| (part / whole).clamp(0.0, 1.0));
    let buckets: Vec<(f64, f64)> = totals
        .buckets
        .iter()
        .filter_map(|(le, count)| Some((parse_le(le)?, *count)))
        .collect();
    let millis = |q: f64| histogram_quantile(q, &buckets).map(|s| s * 1000.0);
    ServiceStats {
        service,
        endpoints: totals.endpoints,
        rps: totals.rps,
        success: share(totals.responses - totals.failures, totals.responses),
        p50_ms: millis(0.5),
        p99_ms: millis(0.99),
        tls: share(totals.tls_requests, totals.requests),
        client_identities: totals.peers.iter().cloned().collect(),
    }
}

fn parse_le(le: &str) -> Option<f64> {
    match le {
        "+Inf" => Some(f64::INFINITY),
        _ => le.parse().ok(),
    }
}

#[cfg(test)]
mod tests;
