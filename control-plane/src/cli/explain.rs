//! `weftctl explain SOURCE DESTINATION`: what the mesh does with one request, and why.
//!
//! Pure: it reads a [`Mesh`] (a proxy's `/config_dump`, or the control plane's
//! resources) and answers with the code the proxy runs: the same [`Directory`] to
//! find the service, the same compiled [`ServiceRoutes`] and `select` for the rule,
//! the same [`decide`] for authorization, and [`Effective`] for the timeouts and
//! retries a rule puts in force.
//!
//! # Layout
//! - here: the [`Explanation`] and [`explain`];
//! - `input`: the source and the request, read from the command line;
//! - `mesh`: the resources, read from documents, Admin resources or a config dump;
//! - `text`: the readable rendering.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::HeaderMap;
use serde::Serialize;
use weft_proto::model::route::{
    BackendRef, CompiledRule, Effective, Filter, GrpcMatch, GrpcRequest, HttpMatch, HttpRequest,
    MethodMatch, PathMatch, RouteRule, RouteTable, ServiceRoutes, ValueMatcher,
};
use weft_proto::model::{decide, Decision, Directory, Resilience, ResourceName, Service};

mod input;
mod mesh;
#[cfg(test)]
mod tests;
mod text;

pub use input::{ExplainError, Request, Scheme, Source};
pub use mesh::{Mesh, MeshError};
pub use text::render;

/// What the mesh does with the request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub source: SourceView,
    pub request: RequestView,
    /// The service the destination names, and the port, when one does.
    pub service: Option<String>,
    pub port: Option<u16>,
    /// How the service was found: `hostname` or `virtual_address`.
    pub resolved_by: Option<&'static str>,
    pub outcome: Outcome,
    /// Why, in a sentence.
    pub reason: String,
    pub route: Option<RouteView>,
    /// Where the request may go: each backend with its share of the traffic.
    pub backends: Vec<BackendView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceView {
    pub namespace: String,
    pub identity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestView {
    pub scheme: Scheme,
    pub method: String,
    pub authority: String,
    pub path: String,
    pub query: Option<String>,
}

/// The answer, as a status the caller would see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Forwarded to a backend (each request picks one by weight).
    Forwarded,
    /// A redirect rule answers it itself.
    Redirected,
    /// No service has this host or address: the proxy passes it on unmeshed.
    NotMeshed,
    /// Routes attach to the port and none matches: 404.
    NoRouteMatched,
    /// The rule's backends all weigh 0: 500.
    NoBackend,
    /// Every backend refuses the source: 403.
    Denied,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteView {
    /// `HTTPRoute` or `GRPCRoute`.
    pub kind: &'static str,
    pub name: String,
    pub rule: usize,
    pub rule_name: Option<String>,
    /// The match that selected the rule, as text.
    pub matched: String,
    /// `producer` (the service's namespace, for every caller) or `consumer` (the
    /// caller's namespace, instead of the producer's).
    pub audience: &'static str,
    pub filters: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResilienceView {
    pub request_timeout_ms: Option<u64>,
    pub per_try_timeout_ms: Option<u64>,
    pub connect_timeout_ms: u64,
    pub retry_on: Vec<String>,
    pub max_retries: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub retry_budget_percent: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendView {
    pub service: String,
    pub port: Option<u16>,
    pub weight: u32,
    /// Of the rule's requests, in percent.
    pub share_percent: f64,
    pub authorization: AuthorizationView,
    /// Timeouts and retries in force for requests sent to this backend: the backend
    /// service's, with the rule's in their place, as the proxy applies them.
    pub resilience: Option<ResilienceView>,
    /// The backend's own outlier detection, circuit breakers and locality.
    pub outlier_detection: Option<String>,
    pub circuit_breakers: Option<String>,
    pub locality: Option<String>,
    pub endpoints: Vec<EndpointView>,
    /// When the backend cannot take the request (unknown service, no such port).
    pub problem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuthorizationView {
    /// `open`, `allowed` or `denied`.
    pub decision: &'static str,
    /// The policy that decided.
    pub policy: Option<String>,
    /// Every policy that applies to the port, in the order they are read.
    pub considered: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointView {
    pub address: String,
    /// `healthy`, `unhealthy`, or what the proxy adds (`ejected`).
    pub state: String,
    pub zone: String,
    pub weight: u32,
    pub identity: Option<String>,
}

/// Explains one request from `source` in `mesh`.
pub fn explain(mesh: &Mesh, source: &Source, request: &Request) -> Explanation {
    let mut explanation = Explanation {
        source: SourceView {
            namespace: source.namespace.clone(),
            identity: source.identity.as_ref().map(ToString::to_string),
        },
        request: RequestView {
            scheme: request.scheme,
            method: request.method.to_string(),
            authority: request.authority.clone(),
            path: request.path.clone(),
            query: request.query.clone(),
        },
        service: None,
        port: None,
        resolved_by: None,
        outcome: Outcome::NotMeshed,
        reason: String::new(),
        route: None,
        backends: Vec::new(),
    };
    let Some((service, port, resolved_by)) = resolve(mesh, request) else {
        explanation.reason = format!(
            "no service has the host or virtual address {}: the proxy passes the request on without routing it",
            request.authority
        );
        return explanation;
    };
    explanation.service = Some(service.name.to_string());
    explanation.port = Some(port);
    explanation.resolved_by = Some(resolved_by);

    let routes = mesh.routes.get(&service.name);
    let table = routes.and_then(|r: &Arc<ServiceRoutes>| r.for_caller(port, &source.namespace));
    let audience = |name: &ResourceName| {
        if name.namespace == service.name.namespace {
            "producer"
        } else {
            "consumer"
        }
    };
    let empty = HeaderMap::new();
    let headers = if request.headers.is_empty() {
        &empty
    } else {
        &request.headers
    };
    let chosen = match table {
        None => None,
        Some(RouteTable::Http(table)) => {
            let http = HttpRequest {
                method: &request.method,
                path: &request.path,
                query: request.query.as_deref(),
                authority: Some(&request.authority),
                headers,
            };
            Some(table.select(&http).map(|s| {
                let matched = describe_http(s.matched);
                chosen_rule("HTTPRoute", s.rule, matched, audience)
            }))
        }
        Some(RouteTable::Grpc(table)) => {
            let call = GrpcRequest::from_path(&request.path, Some(&request.authority), headers);
            Some(call.and_then(|call| table.select(&call)).map(|s| {
                let matched = describe_grpc(s.matched);
                chosen_rule("GRPCRoute", s.rule, matched, audience)
            }))
        }
    };
    let (backends, effective) = match chosen {
        None => {
            explanation.reason = format!(
                "no route attaches to {} port {port} for callers in {}: requests go to the service itself",
                service.name, source.namespace
            );
            let parent = BackendRef {
                service: service.name.clone(),
                port: Some(port),
                weight: 1,
            };
            let effective: Box<dyn Fn(&Resilience) -> Effective> =
                Box::new(|service| Effective::of::<u16>(service, &Default::default(), None));
            (vec![parent], effective)
        }
        Some(None) => {
            explanation.outcome = Outcome::NoRouteMatched;
            explanation.reason = format!(
                "routes attach to {} port {port} and none matches: the proxy answers 404",
                service.name
            );
            return explanation;
        }
        Some(Some(chosen)) => {
            explanation.reason = format!(
                "{} {} rule {} matches ({})",
                chosen.route.kind, chosen.route.name, chosen.route.rule, chosen.route.matched
            );
            explanation.route = Some(chosen.route);
            if !chosen.forwards {
                explanation.outcome = Outcome::Redirected;
                explanation
                    .reason
                    .push_str(": the rule redirects, the proxy answers itself");
                return explanation;
            }
            if chosen.total_weight == 0 {
                explanation.outcome = Outcome::NoBackend;
                explanation
                    .reason
                    .push_str(": every backend of the rule weighs 0, the proxy answers 500");
                explanation.backends = chosen
                    .backends
                    .iter()
                    .map(|b| backend(mesh, source, b, port, 0, &chosen.effective))
                    .collect();
                return explanation;
            }
            (chosen.backends, chosen.effective)
        }
    };
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    explanation.backends = backends
        .iter()
        .map(|b| backend(mesh, source, b, port, total, &effective))
        .collect();
    let takes_traffic = |b: &&BackendView| b.weight > 0 && b.problem.is_none();
    if explanation
        .backends
        .iter()
        .filter(takes_traffic)
        .all(|b| b.authorization.decision == "denied")
    {
        explanation.outcome = Outcome::Denied;
        explanation
            .reason
            .push_str("; every backend's policy denies the source: 403");
    } else {
        explanation.outcome = Outcome::Forwarded;
    }
    explanation
}

/// The service and port a request names, as the proxy finds them.
fn resolve<'m>(mesh: &'m Mesh, request: &Request) -> Option<(&'m Service, u16, &'static str)> {
    let directory = Directory::new(mesh.services.values().map(|s| s.as_ref()));
    let host =
        request
            .authority
            .rsplit_once(':')
            .map_or(request.authority.as_str(), |(host, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    host
                } else {
                    request.authority.as_str()
                }
            });
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>();
    if let Ok(ip) = ip {
        let port = request.port.unwrap_or(80);
        let target = directory
            .by_virtual_address
            .get(&SocketAddr::new(ip, port))?;
        let service = mesh.services.get(&target.service)?;
        return Some((service, target.port, "virtual_address"));
    }
    let name = directory.service_for_host(&request.authority)?;
    let service = mesh.services.get(name)?;
    let port = service.port_for_authority(&request.authority, None)?;
    Some((service, port, "hostname"))
}

struct Chosen<'m> {
    route: RouteView,
    forwards: bool,
    backends: Vec<BackendRef>,
    total_weight: u64,
    /// The timeouts and retries in force over a backend service's own.
    effective: Box<dyn Fn(&Resilience) -> Effective + 'm>,
}

fn chosen_rule<'m, R: RouteRule + RuleSettings>(
    kind: &'static str,
    rule: &'m CompiledRule<R>,
    matched: String,
    audience: impl Fn(&ResourceName) -> &'static str,
) -> Chosen<'m> {
    Chosen {
        route: RouteView {
            kind,
            name: rule.route.name.to_string(),
            rule: rule.rule_index,
            rule_name: rule.rule().name().map(str::to_owned),
            matched,
            audience: audience(&rule.route.name),
            filters: rule.rule().filters().iter().map(filter_name).collect(),
        },
        forwards: rule.rule().forwards(),
        backends: rule.backends.refs().to_vec(),
        total_weight: rule.backends.total_weight(),
        effective: Box::new(|service| rule.rule().effective(service)),
    }
}

/// What both rule kinds have alike beyond [`RouteRule`]: a name, and timeouts and
/// retries over their service's.
trait RuleSettings {
    fn name(&self) -> Option<&str>;
    fn effective(&self, service: &Resilience) -> Effective;
}

impl RuleSettings for weft_proto::model::route::HttpRule {
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    fn effective(&self, service: &Resilience) -> Effective {
        Effective::of(service, &self.timeouts, self.retry.as_ref())
    }
}

impl RuleSettings for weft_proto::model::route::GrpcRule {
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    fn effective(&self, service: &Resilience) -> Effective {
        Effective::of(service, &self.timeouts, self.retry.as_ref())
    }
}

fn filter_name(filter: &Filter) -> String {
    match filter {
        Filter::RequestHeaderModifier(_) => "RequestHeaderModifier",
        Filter::ResponseHeaderModifier(_) => "ResponseHeaderModifier",
        Filter::RequestMirror(_) => "RequestMirror",
        Filter::RequestRedirect(_) => "RequestRedirect",
        Filter::UrlRewrite(_) => "URLRewrite",
        Filter::Fault(_) => "weft.io/Fault",
        Filter::LocalRateLimit(_) => "weft.io/LocalRateLimit",
    }
    .to_owned()
}

fn value(matcher: &ValueMatcher) -> String {
    match matcher {
        ValueMatcher::Exact(v) => format!("={v}"),
        ValueMatcher::RegularExpression(p) => format!("~{}", p.as_str()),
    }
}

fn describe_http(m: &HttpMatch) -> String {
    let mut parts = vec![match &m.path {
        PathMatch::Exact(p) => format!("path = {p}"),
        PathMatch::PathPrefix(p) => format!("path prefix {p}"),
        PathMatch::RegularExpression(p) => format!("path ~ {}", p.as_str()),
    }];
    if let Some(method) = &m.method {
        parts.push(format!("method {method}"));
    }
    parts.extend(
        m.headers
            .iter()
            .map(|h| format!("header {}{}", h.name, value(&h.value))),
    );
    parts.extend(
        m.query_params
            .iter()
            .map(|q| format!("query {}{}", q.name, value(&q.value))),
    );
    parts.join(", ")
}

fn describe_grpc(m: &GrpcMatch) -> String {
    let any = || "*".to_owned();
    let mut parts = vec![match &m.method {
        None => "any method".to_owned(),
        Some(MethodMatch::Exact { service, method }) => format!(
            "method {}/{}",
            service.clone().unwrap_or_else(any),
            method.clone().unwrap_or_else(any)
        ),
        Some(MethodMatch::RegularExpression { service, method }) => format!(
            "method ~ {}/{}",
            service.as_ref().map_or_else(any, |p| p.as_str().to_owned()),
            method.as_ref().map_or_else(any, |p| p.as_str().to_owned())
        ),
    }];
    parts.extend(
        m.headers
            .iter()
            .map(|h| format!("header {}{}", h.name, value(&h.value))),
    );
    parts.join(", ")
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn resilience_view(service: &Resilience, effective: &Effective) -> ResilienceView {
    ResilienceView {
        request_timeout_ms: effective.request_timeout.map(ms),
        per_try_timeout_ms: effective.per_try_timeout.map(ms),
        connect_timeout_ms: ms(service.timeouts.connect),
        retry_on: effective.retry_on.iter().map(|on| on.name()).collect(),
        max_retries: effective.max_retries,
        backoff_base_ms: ms(effective.backoff_base),
        backoff_max_ms: ms(effective.backoff_max),
        retry_budget_percent: service.retries.budget_percent,
    }
}

/// One backend: its share, whether it lets the source in, and its endpoints.
fn backend(
    mesh: &Mesh,
    source: &Source,
    backend: &BackendRef,
    request_port: u16,
    total_weight: u64,
    effective: &dyn Fn(&Resilience) -> Effective,
) -> BackendView {
    let share_percent = if total_weight == 0 {
        0.0
    } else {
        (f64::from(backend.weight) * 1000.0 / total_weight as f64).round() / 10.0
    };
    let mut view = BackendView {
        service: backend.service.to_string(),
        port: backend.port,
        weight: backend.weight,
        share_percent,
        authorization: AuthorizationView {
            decision: "open",
            policy: None,
            considered: Vec::new(),
        },
        resilience: None,
        outlier_detection: None,
        circuit_breakers: None,
        locality: None,
        endpoints: Vec::new(),
        problem: None,
    };
    let Some(service) = mesh.services.get(&backend.service) else {
        view.problem = Some("no such service in this view of the mesh".to_owned());
        return view;
    };
    view.resilience = Some(resilience_view(
        &service.resilience,
        &effective(&service.resilience),
    ));
    // As `BackendRef::port` says: the port with the request's number, or the only one.
    let port = backend.port.or_else(|| {
        if service.ports.iter().any(|p| p.port == request_port) {
            Some(request_port)
        } else if service.ports.len() == 1 {
            service.ports.first().map(|p| p.port)
        } else {
            None
        }
    });
    let Some(port) = port else {
        view.problem = Some(format!("has no port {request_port}"));
        return view;
    };
    view.port = Some(port);
    let port_name = service
        .ports
        .iter()
        .find(|p| p.port == port)
        .map(|p| p.name.clone())
        .unwrap_or_default();

    let applicable: Vec<_> = mesh
        .policies
        .values()
        .filter(|p| p.service == service.name && p.port.is_none_or(|p| p == port))
        .collect();
    view.authorization.considered = applicable.iter().map(|p| p.name.to_string()).collect();
    let (decision, policy) = match decide(applicable.iter().copied(), source.identity.as_ref()) {
        Decision::Open => ("open", None),
        Decision::Allowed(p) => ("allowed", Some(p.name.to_string())),
        Decision::Denied(p) => ("denied", Some(p.name.to_string())),
    };
    view.authorization.decision = decision;
    view.authorization.policy = policy;

    let r = &service.resilience;
    let o = &r.outlier_detection;
    view.outlier_detection = Some(format!(
        "eject after {} consecutive failures for {}ms (up to {}ms), at most {}% of endpoints",
        o.consecutive_failures,
        ms(o.base_ejection),
        ms(o.max_ejection),
        o.max_ejection_percent
    ));
    let c = &r.circuit_breakers;
    view.circuit_breakers = Some(format!(
        "{} connections, {} pending, {} requests",
        c.max_connections, c.max_pending_requests, c.max_requests
    ));
    view.locality = Some(format!(
        "same zone first while {}% healthy{}",
        r.locality.min_healthy_percent,
        if r.locality.failover.is_empty() {
            String::new()
        } else {
            format!(", then {}", r.locality.failover.join(", "))
        }
    ));
    if let Some(endpoints) = mesh.endpoints.get(&service.name) {
        let serves = |name: &str| service.ports.len() == 1 || name.is_empty() || name == port_name;
        view.endpoints = endpoints
            .endpoints
            .iter()
            .filter(|e| serves(&e.port_name))
            .map(|e| {
                let address = e.address.to_string();
                let state = mesh
                    .endpoint_states
                    .get(&(service.name.clone(), address.clone()))
                    .cloned()
                    .unwrap_or_else(|| e.state().to_owned());
                EndpointView {
                    address,
                    state,
                    zone: e.locality.zone.clone(),
                    weight: e.weight,
                    identity: e.identity.as_ref().map(ToString::to_string),
                }
            })
            .collect();
    }
    view
}

/// State a proxy knows beyond the resources, by (service, endpoint address).
pub type EndpointStates = BTreeMap<(ResourceName, String), String>;
