//! What the dashboard shows, built once per round from the same sources as
//! `weftctl top` (the proxies' `/metrics`) and `weftctl status` (the control
//! plane's list of proxies): the service graph, the golden metrics per service, and
//! one entry per proxy with its sync state, config version, NACKs, certificate and
//! endpoint states.
//!
//! A proxy seen once stays on the page: one that leaves the control plane's list
//! (killed, or its stream lost) or stops answering its scrape turns `down` at the
//! next round, which is what an operator watching a failure needs to see.

use std::collections::BTreeMap;

use serde::Serialize;
use weft_proto::v1;
use weft_proto::v1::proxy_status::SyncState;

use crate::cli::top::aggregate::{EdgeStats, ServiceStats};
use crate::cli::top::parse::Sample;
use crate::cli::top::run::workload_name;
use crate::cli::top::{Frame, Unreachable};

/// The page's whole state, as `/api/state` serves it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct View {
    /// RFC 3339, UTC; empty until the first round with rates.
    pub time: String,
    pub nodes: Vec<Node>,
    pub edges: Vec<EdgeStats>,
    pub services: Vec<ServiceStats>,
    pub proxies: Vec<ProxyView>,
    pub unreachable: Vec<Unreachable>,
}

/// A vertex of the service graph: a service, or a client workload without one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    pub name: String,
    /// `service` or `client`.
    pub kind: &'static str,
    /// Requests per second the service received (inbound), or the client sent.
    pub rps: f64,
    pub success: Option<f64>,
    /// Proxies of this workload, and how many of them are down.
    pub proxies: usize,
    pub proxies_down: usize,
}

/// One proxy, as the per-proxy page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProxyView {
    pub id: String,
    /// `namespace/service`, else the proxy's id.
    pub workload: String,
    pub admin: String,
    /// `up` (listed and scraped), `stale` (up, a push outstanding), `nacked`, or
    /// `down` (not listed any more, or its scrape failed).
    pub state: &'static str,
    /// Why it is down, when it is.
    pub reason: String,
    pub build: String,
    pub outdated: bool,
    /// The highest resource version acknowledged, over all types.
    pub config_version: u64,
    /// Unresolved NACK messages, by type.
    pub nacks: Vec<String>,
    /// Seconds until its certificate expires, at this round.
    pub cert_expires_in_s: Option<i64>,
    /// Endpoint counts as this proxy routes: by service, then state.
    pub endpoints: Vec<EndpointStates>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointStates {
    pub service: String,
    pub healthy: u64,
    pub unhealthy: u64,
    /// Out of rotation by outlier detection.
    pub ejected: u64,
    /// Out of rotation until a probe connects again.
    pub unreachable: u64,
}

/// What one scrape says about its own proxy (besides the counters `top` uses).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyMetrics {
    pub cert_expiry_unix_s: Option<f64>,
    pub endpoints: Vec<EndpointStates>,
}

impl ProxyMetrics {
    pub fn of(samples: &[Sample]) -> ProxyMetrics {
        let mut by_service: BTreeMap<&str, EndpointStates> = BTreeMap::new();
        let mut cert_expiry_unix_s = None;
        for sample in samples {
            let count = if sample.value.is_finite() && sample.value > 0.0 {
                sample.value as u64
            } else {
                0
            };
            let service = sample.label("service");
            match sample.name.as_str() {
                "weft_identity_cert_expiry_timestamp_seconds" => {
                    cert_expiry_unix_s = Some(sample.value)
                }
                "weft_endpoints" if !service.is_empty() => {
                    let states = by_service
                        .entry(service)
                        .or_insert_with(|| EndpointStates::new(service));
                    match sample.label("state") {
                        "healthy" => states.healthy += count,
                        _ => states.unhealthy += count,
                    }
                }
                "weft_outlier_ejected_endpoints" if sample.label("direction") == "outbound" => {
                    by_service
                        .entry(service)
                        .or_insert_with(|| EndpointStates::new(service))
                        .ejected += count;
                }
                "weft_endpoints_unreachable" if !service.is_empty() => {
                    by_service
                        .entry(service)
                        .or_insert_with(|| EndpointStates::new(service))
                        .unreachable += count;
                }
                _ => {}
            }
        }
        ProxyMetrics {
            cert_expiry_unix_s,
            endpoints: by_service.into_values().collect(),
        }
    }
}

impl EndpointStates {
    fn new(service: &str) -> EndpointStates {
        EndpointStates {
            service: service.to_owned(),
            healthy: 0,
            unhealthy: 0,
            ejected: 0,
            unreachable: 0,
        }
    }
}

/// One round's inputs besides the scrapes `top` turned into `frame`.
pub struct Round<'a> {
    pub frame: Frame,
    /// The control plane's list (empty with fixed `--proxy` targets).
    pub listed: &'a [v1::ProxyStatus],
    pub control_plane_build: &'a str,
    /// By admin address: what its scrape said, or why it failed.
    pub scraped: BTreeMap<String, Result<ProxyMetrics, String>>,
    /// `--proxy` targets, standing for proxies of their own when nothing is listed.
    pub fixed: &'a [String],
    /// Whether `listed` is this round's answer (a proxy missing from a stale list
    /// has not left).
    pub fresh: bool,
    pub now_unix_s: i64,
}

/// The dashboard's memory between rounds: every proxy seen.
#[derive(Default)]
pub struct Dashboard {
    proxies: BTreeMap<String, ProxyView>,
}

impl Dashboard {
    pub fn update(&mut self, round: Round<'_>) -> View {
        let Round {
            frame,
            listed,
            control_plane_build,
            scraped,
            fixed,
            fresh,
            now_unix_s,
        } = round;
        let mut seen = Vec::new();
        for status in listed {
            seen.push(status.id.clone());
            let view = proxy_view(
                status,
                control_plane_build,
                scraped.get(&status.admin_address),
                now_unix_s,
            );
            self.proxies.insert(status.id.clone(), view);
        }
        for target in fixed {
            seen.push(target.clone());
            let mut view = ProxyView {
                id: target.clone(),
                workload: target.clone(),
                admin: target.clone(),
                state: "up",
                reason: String::new(),
                build: String::new(),
                outdated: false,
                config_version: 0,
                nacks: Vec::new(),
                cert_expires_in_s: None,
                endpoints: Vec::new(),
            };
            apply_scrape(&mut view, scraped.get(target), now_unix_s);
            self.proxies.insert(target.clone(), view);
        }
        for (id, view) in &mut self.proxies {
            if fresh && !seen.contains(id) && view.state != "down" {
                view.state = "down";
                view.reason = "no longer connected to the control plane".to_owned();
            }
        }
        let proxies: Vec<ProxyView> = self.proxies.values().cloned().collect();
        View {
            nodes: nodes(&frame, &proxies),
            time: frame.time,
            edges: frame.edges,
            services: frame.services,
            proxies,
            unreachable: frame.unreachable,
        }
    }
}

fn proxy_view(
    status: &v1::ProxyStatus,
    control_plane_build: &str,
    scraped: Option<&Result<ProxyMetrics, String>>,
    now_unix_s: i64,
) -> ProxyView {
    let nacks: Vec<String> = status
        .types
        .iter()
        .filter(|t| !t.last_nack.is_empty())
        .map(|t| format!("{}: {}", short_type(&t.type_url), t.last_nack))
        .collect();
    let state = match SyncState::try_from(status.state) {
        Ok(SyncState::Nacked) => "nacked",
        Ok(SyncState::Synced) => "up",
        _ => "stale",
    };
    let mut view = ProxyView {
        id: status.id.clone(),
        workload: workload_name(status),
        admin: status.admin_address.clone(),
        state,
        reason: String::new(),
        build: status.build.clone(),
        outdated: !control_plane_build.is_empty() && status.build != control_plane_build,
        config_version: status
            .types
            .iter()
            .map(|t| t.acked_version)
            .max()
            .unwrap_or(0),
        nacks,
        cert_expires_in_s: None,
        endpoints: Vec::new(),
    };
    if status.admin_address.is_empty() {
        return view;
    }
    apply_scrape(&mut view, scraped, now_unix_s);
    view
}

/// A failed scrape makes the proxy `down`, whatever the control plane says: its
/// admin port no longer answers.
fn apply_scrape(
    view: &mut ProxyView,
    scraped: Option<&Result<ProxyMetrics, String>>,
    now_unix_s: i64,
) {
    match scraped {
        Some(Ok(metrics)) => {
            view.cert_expires_in_s = metrics.cert_expiry_unix_s.map(|at| at as i64 - now_unix_s);
            view.endpoints = metrics.endpoints.clone();
        }
        Some(Err(error)) => {
            view.state = "down";
            view.reason = format!("its admin endpoint does not answer: {error}");
        }
        None => {}
    }
}

/// `type.weft.io/weft.v1.Service` → `Service`.
fn short_type(type_url: &str) -> &str {
    type_url.rsplit('.').next().unwrap_or(type_url)
}

/// The graph's vertices: every service with traffic or endpoints, and every client
/// workload that calls one.
fn nodes(frame: &Frame, proxies: &[ProxyView]) -> Vec<Node> {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for service in &frame.services {
        nodes.insert(
            service.service.clone(),
            Node {
                name: service.service.clone(),
                kind: "service",
                rps: service.rps,
                success: service.success,
                proxies: 0,
                proxies_down: 0,
            },
        );
    }
    for edge in &frame.edges {
        let client = nodes.entry(edge.source.clone()).or_insert_with(|| Node {
            name: edge.source.clone(),
            kind: "client",
            rps: 0.0,
            success: None,
            proxies: 0,
            proxies_down: 0,
        });
        if client.kind == "client" {
            client.rps += edge.rps;
        }
    }
    for proxy in proxies {
        if let Some(node) = nodes.get_mut(&proxy.workload) {
            node.proxies += 1;
            node.proxies_down += usize::from(proxy.state == "down");
        }
    }
    nodes.into_values().collect()
}

#[cfg(test)]
mod tests;
