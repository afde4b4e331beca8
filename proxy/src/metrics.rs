//! The proxy's Prometheus metrics: names, labels, and handles the data path holds.
//!
//! Handles are registered when a snapshot brings a service (cold path) and kept in
//! [`ServiceMetrics`]; a request only touches atomics. Labels whose values are only
//! known per response (status code, gRPC status, error) go through small lazily
//! filled tables indexed by the value, so each distinct label set is registered once
//! and never looked up in the registry again.
//!
//! Names follow Prometheus conventions (`weft_` prefix, `_total`, `_seconds`,
//! `_bytes`); labels stay low-cardinality: `direction`, `service` (`namespace/name`,
//! empty for passthrough traffic), `route` (the HTTPRoute or GRPCRoute that chose the service;
//! empty when none did), `status_code`,
//! `grpc_status`, `error`, `state`, `policy` (an authorization policy's
//! `namespace/name`), `kind` and `reason` (a route filter's counters), and on inbound traffic series `tls` (`"true"` when the
//! caller came in over mTLS).
//!
//! Peer identities ([`peers`]): outbound responses and durations carry
//! `dst_identity`, the SPIFFE ID of the endpoint that answered (empty when the hop
//! was plaintext or the proxy answered itself); inbound requests, responses,
//! durations and errors carry `client_identity`, the mTLS caller's SPIFFE ID (empty
//! for plaintext). Bound: at most [`peers::MAX_IDENTITIES`] (16) identities per
//! service and direction get a value of their own; later ones share the value
//! `overflow`, counted by `weft_metrics_identities_overflowed_total`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::drain;

pub mod peers;

pub use peers::{Peer, PeerSlots};

const REQUESTS: &str = "weft_requests_total";
const RESPONSES: &str = "weft_responses_total";
const DURATION: &str = "weft_request_duration_seconds";
const REQUEST_ERRORS: &str = "weft_request_errors_total";
const TCP_OPENED: &str = "weft_tcp_connections_opened_total";
const TCP_CLOSED: &str = "weft_tcp_connections_closed_total";
const TCP_OPEN: &str = "weft_tcp_connections_open";
const TCP_RECEIVED: &str = "weft_tcp_received_bytes_total";
const TCP_SENT: &str = "weft_tcp_sent_bytes_total";
const PASSTHROUGH: &str = "weft_outbound_passthrough_connections_total";
const ENDPOINTS: &str = "weft_endpoints";
const BUILD_INFO: &str = "weft_build_info";
const RETRIES: &str = "weft_retries_total";
const BUDGET_EXHAUSTED: &str = "weft_retry_budget_exhausted_total";
const EJECTIONS: &str = "weft_outlier_ejections_total";
const EJECTED: &str = "weft_outlier_ejected_endpoints";
const OVERFLOWS: &str = "weft_circuit_breaker_overflows_total";
const MOVES: &str = "weft_failover_moves_total";
const MOVES_BOUNDED: &str = "weft_failover_bound_exhausted_total";
const UNREACHABLE: &str = "weft_endpoint_unreachable_total";
const UNREACHABLE_NOW: &str = "weft_endpoints_unreachable";
const AUTHZ_ALLOWED: &str = "weft_authz_allowed_total";
const AUTHZ_DENIED: &str = "weft_authz_denied_total";
const DOWNSTREAM_OPEN: &str = "weft_downstream_connections_open";
const DOWNSTREAM_REFUSED: &str = "weft_downstream_connections_refused_total";
const ROUTE_FAULTS: &str = "weft_route_faults_total";
const ROUTE_RATE_LIMITED: &str = "weft_route_rate_limited_total";
const ROUTE_MIRRORS: &str = "weft_route_mirrors_total";
const ROUTE_MIRRORS_DROPPED: &str = "weft_route_mirrors_dropped_total";

/// Upper bounds of the latency buckets: 0.5 ms (a loopback hop) up to 30 s (a
/// slow streaming call), roughly doubling.
const DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0,
];

/// Builds and installs the global recorder, with histogram buckets and the
/// descriptions `promtool check metrics` wants. Call once per process.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(DURATION.to_owned()), &DURATION_BUCKETS)?
        .install_recorder()?;
    describe();
    Ok(handle)
}

/// Histogram samples queue up in the recorder until a render or an upkeep drains
/// them; without a scraper that is unbounded memory, so this drains them on the
/// control runtime every few seconds.
pub async fn upkeep(handle: PrometheusHandle, mut drain: drain::Watch) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            () = drain.signaled() => return,
        }
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS,
        "HTTP requests received, by direction and service."
    );
    describe_counter!(
        RESPONSES,
        "HTTP responses sent back, by status code and gRPC status (empty when not gRPC)."
    );
    describe_histogram!(
        DURATION,
        Unit::Seconds,
        "Time from receiving a request to the end of its response stream."
    );
    describe_counter!(
        REQUEST_ERRORS,
        "Requests the proxy answered itself because forwarding failed, by error."
    );
    describe_counter!(TCP_OPENED, "Connections accepted.");
    describe_counter!(TCP_CLOSED, "Accepted connections that have closed.");
    describe_gauge!(TCP_OPEN, "Accepted connections currently open.");
    describe_counter!(
        TCP_RECEIVED,
        Unit::Bytes,
        "Bytes read from the accepted (downstream) side of connections."
    );
    describe_counter!(
        TCP_SENT,
        Unit::Bytes,
        "Bytes written to the accepted (downstream) side of connections."
    );
    describe_counter!(
        PASSTHROUGH,
        "Captured connections to a destination that is no mesh service, forwarded unchanged."
    );
    describe_gauge!(ENDPOINTS, "Endpoints of each service, by health state.");
    describe_gauge!(
        DOWNSTREAM_OPEN,
        "Downstream connections open, over every data-path listener (the ones --max-connections bounds)."
    );
    describe_counter!(
        DOWNSTREAM_REFUSED,
        "Downstream connections closed at accept because --max-connections were open, by direction."
    );
    describe_counter!(
        RETRIES,
        "Retry attempts by outcome: success (a response that was not retried again), failure."
    );
    describe_counter!(
        BUDGET_EXHAUSTED,
        "Retries not made because the service's retry budget was spent."
    );
    describe_counter!(
        EJECTIONS,
        "Endpoints ejected by outlier detection (consecutive failures)."
    );
    describe_gauge!(EJECTED, "Endpoints currently ejected by outlier detection.");
    describe_counter!(
        MOVES,
        "Requests moved to another endpoint after a failed connect or a refused stream (no retry budget spent)."
    );
    describe_counter!(
        MOVES_BOUNDED,
        "Moves refused because the failover bound of the service was spent."
    );
    describe_counter!(
        UNREACHABLE,
        "Endpoints taken out of rotation because a connect to them failed."
    );
    describe_gauge!(
        UNREACHABLE_NOW,
        "Endpoints out of rotation until a probe connects to them again."
    );
    describe_counter!(
        OVERFLOWS,
        "Requests refused at once because a circuit-breaker limit was reached, by limit."
    );
    describe_counter!(
        AUTHZ_ALLOWED,
        "Inbound requests and TCP connections an authorization policy let through, by policy and protected service."
    );
    describe_counter!(
        AUTHZ_DENIED,
        "Inbound requests (answered 403 or PERMISSION_DENIED) and TCP connections (closed) an authorization policy refused, by policy and protected service."
    );
    describe_counter!(
        ROUTE_FAULTS,
        "Faults a route's weft.io/Fault filter injected, by route and kind (delay or abort)."
    );
    describe_counter!(
        ROUTE_RATE_LIMITED,
        "Requests a route's weft.io/LocalRateLimit filter refused (429 or RESOURCE_EXHAUSTED), by route."
    );
    describe_counter!(
        ROUTE_MIRRORS,
        "Copies of requests a route's RequestMirror filter sent to the mirror service, by route."
    );
    describe_counter!(
        ROUTE_MIRRORS_DROPPED,
        "Copies a RequestMirror filter chose to send but did not, by route and reason (limit: too many in flight; body: over 64 KiB, failed or never sent, or a tunnel; no_service: the mirror service is not in the mesh)."
    );
    // The discovery client's metrics, described here so that every series on
    // /metrics has HELP text (`promtool check metrics` fails without it).
    // Describing is first-wins and idempotent, so the discovery module may add
    // its own later.
    describe_gauge!(
        "weft_control_plane_connected",
        "1 while the discovery stream to the control plane is up."
    );
    describe_counter!(
        "weft_control_plane_reconnects_total",
        "Discovery streams lost (each followed by a reconnect attempt)."
    );
    describe_counter!(
        "weft_config_updates_total",
        "Configuration pushes applied, by resource type and result (ack or nack)."
    );
    describe_gauge!("weft_config_resources", "Resources held, by type.");
    describe_gauge!(
        "weft_config_rejected_resources",
        "Resources the last push of each type brought that this proxy refused (NACKed), by type."
    );
    describe_counter!(
        "weft_config_resources_received_total",
        "Resources received in configuration pushes, by type (a resumed stream receives only what changed)."
    );
    describe_gauge!(
        "weft_config_stale",
        "1 while the config served was loaded from the state directory and the control plane has not answered since."
    );
    describe_counter!(
        "weft_config_state_errors_total",
        "State-directory config files that could not be loaded or saved, by operation."
    );
    describe_counter!(
        "weft_health_checks_total",
        "Active health checks of the proxy's own application, by result."
    );
    describe_gauge!(
        "weft_workload_healthy",
        "1 while the active health check finds the proxy's own application healthy."
    );
    describe_gauge!(
        "weft_config_version",
        "Highest resource version held, by type."
    );
    describe_gauge!(
        "weft_identity_cert_expiry_timestamp_seconds",
        "When the proxy's current certificate expires, in seconds since the Unix epoch."
    );
    describe_counter!(
        "weft_identity_renewals_total",
        "Certificate requests to the control plane, by result (success or failure)."
    );
    describe_counter!(
        "weft_tls_connections_total",
        "mTLS handshakes completed, by direction and the peer's SPIFFE ID."
    );
    describe_counter!(
        "weft_tap_events_dropped_total",
        "Finished requests a running tap (GET /tap) matched but did not get, by reason (rate: over its max_rps; queue_full: its reader fell behind)."
    );
    describe_counter!(
        peers::OVERFLOWED,
        "Endpoints (outbound) or connections (inbound) whose peer identity was labelled overflow because their service already had 16 identity values, by direction and service."
    );
    describe_counter!(
        "weft_trace_spans_exported_total",
        "Trace spans the collector accepted."
    );
    describe_counter!(
        "weft_trace_spans_dropped_total",
        "Trace spans recorded but not exported, by reason (queue_full: the collector fell behind; export_failed: it refused a batch or could not be reached)."
    );
    describe_counter!(
        crate::access_log::DROPPED,
        "Access log lines dropped because the queue to the writer of stdout was full."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the labels describe this build.");
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// The gRPC status codes, 0 (OK) to 16 (UNAUTHENTICATED).
const GRPC_CODES: usize = 17;

/// All handles for one service in one direction.
#[derive(Debug)]
pub struct ServiceMetrics {
    direction: &'static str,
    service: String,
    /// Inbound only: `"true"` when the connection came in over mTLS, else
    /// `"false"`. Outbound handles are made per service before an endpoint (and
    /// so whether the hop is encrypted) is picked, so they carry no `tls` label.
    tls: Option<&'static str>,
    /// The route (`namespace/name`) that chose this service for the request; empty
    /// when no route did. Bounded: only configured routes get handles.
    route: String,
    /// The peer identity label's value (see [`peers`]): empty in a service's own
    /// handles, a SPIFFE ID or `overflow` in the ones [`ServiceMetrics::for_peer`] made.
    peer: Arc<str>,
    /// The handles by peer identity slot, made on first use of each; only a
    /// service's own handles (empty `peer`) fill this.
    peers: OnceLock<Box<[OnceLock<Arc<ServiceMetrics>>; peers::SLOTS]>>,
    pub requests: Counter,
    pub duration: Histogram,
    /// By HTTP status class (index code/100 - 1), then code % 100; filled lazily.
    responses: [OnceLock<Box<[OnceLock<Counter>; 100]>>; 5],
    /// Responses with status 200 that carry a gRPC status, by that status.
    grpc_responses: [OnceLock<Counter>; GRPC_CODES],
    errors: [OnceLock<Counter>; ERROR_SLOTS],
    pub tcp: TcpMetrics,
    /// Registered on first use (a service's first request).
    resilience: OnceLock<ResilienceMetrics>,
}

/// The client-side resilience handles of one (outbound) service.
#[derive(Debug)]
pub struct ResilienceMetrics {
    pub retry_success: Counter,
    pub retry_failure: Counter,
    pub budget_exhausted: Counter,
    pub ejections: Counter,
    pub ejected: Gauge,
    pub moves: Counter,
    pub moves_bounded: Counter,
    pub unreachable: Counter,
    pub unreachable_now: Gauge,
    /// By `resilience::breaker::Limit`.
    pub overflows: [Counter; 3],
}

/// Room for every `dataplane::error::Class`; checked by a test there.
pub const ERROR_SLOTS: usize = 12;

#[derive(Debug, Clone)]
pub struct TcpMetrics {
    pub opened: Counter,
    pub closed: Counter,
    pub open: Gauge,
    pub received: Counter,
    pub sent: Counter,
}

impl ServiceMetrics {
    /// The handles of an outbound service (no `tls` label).
    pub fn new(direction: Direction, service: String) -> ServiceMetrics {
        ServiceMetrics::with_tls(direction, service, None, String::new())
    }

    /// The handles of requests a route sent to an outbound service.
    pub fn routed(service: String, route: String) -> ServiceMetrics {
        ServiceMetrics::with_tls(Direction::Outbound, service, None, route)
    }

    /// The handles of the local service's inbound traffic that came in over mTLS
    /// (`tls = true`) or not.
    pub fn inbound(service: String, tls: bool) -> ServiceMetrics {
        ServiceMetrics::with_tls(Direction::Inbound, service, Some(tls), String::new())
    }

    fn with_tls(
        direction: Direction,
        service: String,
        tls: Option<bool>,
        route: String,
    ) -> ServiceMetrics {
        let d = direction.as_str();
        let tls = tls.map(|t| if t { "true" } else { "false" });
        let labels = |extra: &[(&'static str, String)]| -> Vec<metrics::Label> {
            let mut labels = vec![
                metrics::Label::new("direction", d),
                metrics::Label::new("service", service.clone()),
            ];
            labels.extend(tls.map(|t| metrics::Label::new("tls", t)));
            labels.extend(
                extra
                    .iter()
                    .map(|(k, v)| metrics::Label::new(*k, v.clone())),
            );
            labels
        };
        let route_label = [("route", route.clone())];
        let with_peer = [
            ("route", route.clone()),
            (peer_key(direction), String::new()),
        ];
        let request_labels = match direction {
            Direction::Inbound => &with_peer[..],
            Direction::Outbound => &route_label[..],
        };
        ServiceMetrics {
            requests: metrics::counter!(REQUESTS, labels(request_labels)),
            duration: metrics::histogram!(DURATION, labels(&with_peer)),
            responses: Default::default(),
            grpc_responses: Default::default(),
            errors: Default::default(),
            tcp: TcpMetrics {
                opened: metrics::counter!(TCP_OPENED, labels(&[])),
                closed: metrics::counter!(TCP_CLOSED, labels(&[])),
                open: metrics::gauge!(TCP_OPEN, labels(&[])),
                received: metrics::counter!(TCP_RECEIVED, labels(&[])),
                sent: metrics::counter!(TCP_SENT, labels(&[])),
            },
            resilience: OnceLock::new(),
            direction: d,
            service,
            tls,
            route,
            peer: Arc::from(""),
            peers: OnceLock::new(),
        }
    }

    /// The handles of the requests answered by (outbound) or coming from (inbound)
    /// `peer`, registered on the first call for its slot. A request only indexes
    /// two tables. Call it on a service's own handles.
    pub fn for_peer(&self, peer: &Peer) -> &Arc<ServiceMetrics> {
        let table = self
            .peers
            .get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
        table[peer.slot].get_or_init(|| Arc::new(self.with_peer(peer.label.clone())))
    }

    fn with_peer(&self, peer: Arc<str>) -> ServiceMetrics {
        let mut labels = self.base_labels();
        labels.push(metrics::Label::new(self.peer_key(), peer.to_string()));
        let requests = match self.direction == Direction::Inbound.as_str() {
            true => metrics::counter!(REQUESTS, labels.clone()),
            // Outbound requests are counted before an endpoint is picked, so they
            // carry no peer; the peer's handles share the service's counter.
            false => self.requests.clone(),
        };
        ServiceMetrics {
            direction: self.direction,
            service: self.service.clone(),
            tls: self.tls,
            route: self.route.clone(),
            peer,
            peers: OnceLock::new(),
            requests,
            duration: metrics::histogram!(DURATION, labels),
            responses: Default::default(),
            grpc_responses: Default::default(),
            errors: Default::default(),
            tcp: self.tcp.clone(),
            resilience: OnceLock::new(),
        }
    }

    fn peer_key(&self) -> &'static str {
        match self.direction == Direction::Inbound.as_str() {
            true => peer_key(Direction::Inbound),
            false => peer_key(Direction::Outbound),
        }
    }

    pub fn resilience(&self) -> &ResilienceMetrics {
        use crate::resilience::breaker::Limit;
        self.resilience.get_or_init(|| {
            let d = self.direction;
            let service = || self.service.clone();
            let overflow = |limit: Limit| {
                metrics::counter!(OVERFLOWS, "direction" => d, "service" => service(), "limit" => limit.label())
            };
            ResilienceMetrics {
                retry_success: metrics::counter!(RETRIES, "direction" => d, "service" => service(), "outcome" => "success"),
                retry_failure: metrics::counter!(RETRIES, "direction" => d, "service" => service(), "outcome" => "failure"),
                budget_exhausted: metrics::counter!(BUDGET_EXHAUSTED, "direction" => d, "service" => service()),
                ejections: metrics::counter!(EJECTIONS, "direction" => d, "service" => service()),
                ejected: metrics::gauge!(EJECTED, "direction" => d, "service" => service()),
                moves: metrics::counter!(MOVES, "direction" => d, "service" => service()),
                moves_bounded: metrics::counter!(MOVES_BOUNDED, "direction" => d, "service" => service()),
                unreachable: metrics::counter!(UNREACHABLE, "direction" => d, "service" => service()),
                unreachable_now: metrics::gauge!(UNREACHABLE_NOW, "direction" => d, "service" => service()),
                overflows: Limit::ALL.map(overflow),
            }
        })
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// `inbound` or `outbound`.
    pub fn direction(&self) -> &'static str {
        self.direction
    }

    /// The route that chose the service; empty when none did.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// Counts one response. `grpc_status` is only looked at for status 200 (gRPC
    /// answers every call with 200; anything else is an HTTP-level failure).
    pub fn response(&self, status: u16, grpc_status: Option<u16>) {
        if status == 200 {
            if let Some(code) = grpc_status.filter(|c| usize::from(*c) < GRPC_CODES) {
                let counter = self.grpc_responses[usize::from(code)]
                    .get_or_init(|| self.register_response(200, &code.to_string()));
                counter.increment(1);
                return;
            }
        }
        let Some(class) = (status / 100).checked_sub(1).filter(|c| *c < 5) else {
            return;
        };
        let table = self.responses[usize::from(class)]
            .get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
        table[usize::from(status % 100)]
            .get_or_init(|| self.register_response(status, ""))
            .increment(1);
    }

    fn register_response(&self, status: u16, grpc_status: &str) -> Counter {
        let mut labels = self.base_labels();
        labels.push(metrics::Label::new("status_code", status.to_string()));
        labels.push(metrics::Label::new("grpc_status", grpc_status.to_owned()));
        labels.push(metrics::Label::new(self.peer_key(), self.peer.to_string()));
        metrics::counter!(RESPONSES, labels)
    }

    /// `direction`, `service`, `tls` (inbound only) and `route`.
    fn base_labels(&self) -> Vec<metrics::Label> {
        let mut labels = vec![
            metrics::Label::new("direction", self.direction),
            metrics::Label::new("service", self.service.clone()),
        ];
        labels.extend(self.tls.map(|t| metrics::Label::new("tls", t)));
        labels.push(metrics::Label::new("route", self.route.clone()));
        labels
    }

    /// Counts a request the proxy could not forward; `slot` and `label` come from
    /// the error's class.
    pub fn error(&self, slot: usize, label: &'static str) {
        if let Some(cell) = self.errors.get(slot) {
            cell.get_or_init(|| {
                let mut labels = self.base_labels();
                labels.push(metrics::Label::new("error", label));
                // Outbound, the proxy answered itself: no endpoint's identity.
                if self.direction == Direction::Inbound.as_str() {
                    labels.push(metrics::Label::new(self.peer_key(), self.peer.to_string()));
                }
                metrics::counter!(REQUEST_ERRORS, labels)
            })
            .increment(1);
        }
    }
}

/// The peer identity label of a direction's request series.
fn peer_key(direction: Direction) -> &'static str {
    match direction {
        Direction::Inbound => "client_identity",
        Direction::Outbound => "dst_identity",
    }
}

/// The decision counters of one authorization policy on this proxy.
#[derive(Debug)]
pub struct AuthzMetrics {
    pub allowed: Counter,
    pub denied: Counter,
}

impl AuthzMetrics {
    pub fn new(policy: String, service: String) -> AuthzMetrics {
        AuthzMetrics {
            allowed: metrics::counter!(AUTHZ_ALLOWED, "policy" => policy.clone(), "service" => service.clone()),
            denied: metrics::counter!(AUTHZ_DENIED, "policy" => policy, "service" => service),
        }
    }
}

/// The counters of one route's filters (`route` is its `namespace/name`); made
/// when a snapshot brings a route that uses Fault, LocalRateLimit or RequestMirror.
#[derive(Debug)]
pub struct RouteFilterMetrics {
    pub delays: Counter,
    pub aborts: Counter,
    pub rate_limited: Counter,
    pub mirrored: Counter,
    pub mirrors_over_limit: Counter,
    pub mirrors_body_streaming: Counter,
    pub mirrors_no_service: Counter,
}

impl RouteFilterMetrics {
    pub fn new(route: String) -> RouteFilterMetrics {
        let fault = |kind: &'static str| metrics::counter!(ROUTE_FAULTS, "route" => route.clone(), "kind" => kind);
        let dropped = |reason: &'static str| metrics::counter!(ROUTE_MIRRORS_DROPPED, "route" => route.clone(), "reason" => reason);
        RouteFilterMetrics {
            delays: fault("delay"),
            aborts: fault("abort"),
            rate_limited: metrics::counter!(ROUTE_RATE_LIMITED, "route" => route.clone()),
            mirrored: metrics::counter!(ROUTE_MIRRORS, "route" => route.clone()),
            mirrors_over_limit: dropped("limit"),
            mirrors_body_streaming: dropped("body"),
            mirrors_no_service: dropped("no_service"),
        }
    }
}

/// The number of downstream connections open (see `dataplane::admission`).
pub fn downstream_open() -> Gauge {
    metrics::gauge!(DOWNSTREAM_OPEN)
}

/// Counts connections refused at accept because the connection limit was reached.
pub fn downstream_refused(direction: Direction) -> Counter {
    metrics::counter!(DOWNSTREAM_REFUSED, "direction" => direction.as_str())
}

/// Counts one captured connection forwarded unchanged to a non-mesh destination.
pub fn passthrough() -> Counter {
    metrics::counter!(PASSTHROUGH)
}

/// The endpoint gauges of one service.
#[derive(Debug)]
pub struct EndpointGauges {
    pub healthy: Gauge,
    pub unhealthy: Gauge,
}

impl EndpointGauges {
    pub fn new(service: String) -> EndpointGauges {
        EndpointGauges {
            healthy: metrics::gauge!(ENDPOINTS, "service" => service.clone(), "state" => "healthy"),
            unhealthy: metrics::gauge!(ENDPOINTS, "service" => service, "state" => "unhealthy"),
        }
    }
}
