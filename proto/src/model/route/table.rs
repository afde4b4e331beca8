//! Route tables: the routes of one service compiled, once per snapshot, into the
//! order the Gateway API's precedence rules give, so that choosing a request's rule
//! is a walk down a sorted list that stops at the first match.
//!
//! Which routes apply follows GAMMA: a route attaches to a service (and optionally
//! one port of it) through its parents. Routes in the service's own namespace are
//! its producer's and apply to every caller; routes in another namespace are
//! consumer routes and apply only to callers in theirs, instead of the producer's.
//! On one port, GRPCRoutes take precedence over HTTPRoutes: when both attach, the
//! HTTPRoutes are ignored (GEP-1294). A port with routes refuses a request that
//! matches none of them (404); a port without routes forwards as if there were none.
//!
//! Precedence, highest first (HTTPRoute): the most characters of a matching
//! non-wildcard hostname, then of any matching hostname; an Exact path, then a
//! RegularExpression path, then the longest PathPrefix; a method; the most header
//! matches; the most query parameter matches. GRPCRoute: hostnames as above, then
//! the service (an exact name by its length, above a regular expression, above
//! none), then the method likewise, then the most header matches. Remaining ties go
//! to the oldest route, then the first by `namespace/name`, then the first rule, as
//! the Gateway API says. Regular expressions rank below exact values and above
//! prefixes, and not by their length, which says nothing of how much they match (as
//! Envoy Gateway, Contour and nginx do; the Gateway API leaves it to the
//! implementation).

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;

use super::backend::Backends;
use super::common::Route;
use super::filter::Filter;
use super::grpc::{GrpcMatch, GrpcRequest, GrpcRoute, GrpcRule, MethodMatch};
use super::hostname::{request_host, Hostname};
use super::http::{HttpMatch, HttpRequest, HttpRoute, HttpRule, PathMatch};
use super::refs::BackendRef;
use crate::model::{Protocol, ResourceName, Service};

/// What a table needs of a route kind's rules.
pub trait RouteRule {
    type Match;
    type Request<'a>: Copy;
    /// A match's precedence; greater wins.
    type Precedence: Ord + Copy;

    /// At least one.
    fn matches(&self) -> &[Self::Match];
    fn backends(&self) -> &[BackendRef];
    fn filters(&self) -> &[Filter];
    /// Whether the rule forwards requests (a redirect answers them itself).
    fn forwards(&self) -> bool {
        !self
            .filters()
            .iter()
            .any(|f| matches!(f, Filter::RequestRedirect(_)))
    }
    fn precedence(m: &Self::Match) -> Self::Precedence;
    fn is_match(m: &Self::Match, request: &Self::Request<'_>) -> bool;
    fn authority<'a>(request: &Self::Request<'a>) -> Option<&'a str>;
}

/// How a path match ranks: variants later in the list rank higher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathRank {
    /// By the prefix's length, without a trailing `/`.
    PathPrefix(usize),
    RegularExpression,
    Exact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HttpPrecedence {
    pub path: PathRank,
    pub method: bool,
    pub headers: usize,
    pub query_params: usize,
}

/// How a gRPC service or method condition ranks: variants later rank higher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NameRank {
    Any,
    RegularExpression,
    /// By the name's length.
    Exact(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GrpcPrecedence {
    pub service: NameRank,
    pub method: NameRank,
    pub headers: usize,
}

impl RouteRule for HttpRule {
    type Match = HttpMatch;
    type Request<'a> = HttpRequest<'a>;
    type Precedence = HttpPrecedence;

    fn matches(&self) -> &[HttpMatch] {
        &self.matches
    }
    fn backends(&self) -> &[BackendRef] {
        &self.backends
    }
    fn filters(&self) -> &[Filter] {
        &self.filters
    }
    fn precedence(m: &HttpMatch) -> HttpPrecedence {
        HttpPrecedence {
            path: match &m.path {
                PathMatch::Exact(_) => PathRank::Exact,
                PathMatch::RegularExpression(_) => PathRank::RegularExpression,
                PathMatch::PathPrefix(prefix) => {
                    PathRank::PathPrefix(prefix.trim_end_matches('/').len())
                }
            },
            method: m.method.is_some(),
            headers: m.headers.len(),
            query_params: m.query_params.len(),
        }
    }
    fn is_match(m: &HttpMatch, request: &HttpRequest<'_>) -> bool {
        m.matches(request)
    }
    fn authority<'a>(request: &Self::Request<'a>) -> Option<&'a str> {
        request.authority
    }
}

impl RouteRule for GrpcRule {
    type Match = GrpcMatch;
    type Request<'a> = GrpcRequest<'a>;
    type Precedence = GrpcPrecedence;

    fn matches(&self) -> &[GrpcMatch] {
        &self.matches
    }
    fn backends(&self) -> &[BackendRef] {
        &self.backends
    }
    fn filters(&self) -> &[Filter] {
        &self.filters
    }
    fn precedence(m: &GrpcMatch) -> GrpcPrecedence {
        let (service, method) = match &m.method {
            None => (NameRank::Any, NameRank::Any),
            Some(MethodMatch::Exact { service, method }) => {
                let rank = |name: &Option<String>| {
                    name.as_ref()
                        .map_or(NameRank::Any, |n| NameRank::Exact(n.len()))
                };
                (rank(service), rank(method))
            }
            Some(MethodMatch::RegularExpression { service, method }) => {
                let rank = |p: &Option<_>| {
                    if p.is_some() {
                        NameRank::RegularExpression
                    } else {
                        NameRank::Any
                    }
                };
                (rank(service), rank(method))
            }
        };
        GrpcPrecedence {
            service,
            method,
            headers: m.headers.len(),
        }
    }
    fn is_match(m: &GrpcMatch, request: &GrpcRequest<'_>) -> bool {
        m.matches(request)
    }
    fn authority<'a>(request: &Self::Request<'a>) -> Option<&'a str> {
        request.authority
    }
}

/// One rule of one route, as a table holds it.
#[derive(Debug, Clone)]
pub struct CompiledRule<R> {
    pub route: Arc<Route<R>>,
    pub rule_index: usize,
    /// The rule's backends; for a forwarding rule without any, the parent service.
    pub backends: Backends,
}

impl<R> CompiledRule<R> {
    pub fn rule(&self) -> &R {
        &self.route.rules[self.rule_index]
    }
}

/// One (hostname, match) of a rule, in precedence order.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Index into the table's hostnames; `None`: the route has none (any host).
    host: Option<u32>,
    rule: u32,
    matched: u32,
}

/// The rules that decide the requests of one group of callers to one service port.
#[derive(Debug, Clone)]
pub struct Table<R> {
    rules: Vec<CompiledRule<R>>,
    hostnames: Vec<Hostname>,
    entries: Vec<Entry>,
}

pub type HttpTable = Table<HttpRule>;
pub type GrpcTable = Table<GrpcRule>;

/// The rule chosen for a request, and which of its matches matched.
#[derive(Debug)]
pub struct Selection<'t, R: RouteRule> {
    pub rule: &'t CompiledRule<R>,
    /// The rule's position in [`Table::rules`], for per-rule state kept beside the
    /// table (metrics handles, rate-limit buckets).
    pub index: usize,
    pub matched: &'t R::Match,
    /// The position of `matched` in the rule's matches, for what needs it later
    /// without holding the table (a ReplacePrefixMatch replaces its path prefix).
    pub match_index: usize,
}

impl<R: RouteRule> Table<R> {
    /// Compiles the routes (of one group of callers, attached to `parent`) in
    /// precedence order.
    pub fn compile(routes: &[Arc<Route<R>>], parent: &ResourceName) -> Table<R> {
        let mut rules = Vec::new();
        let mut hostnames: Vec<Hostname> = Vec::new();
        // (sort key, entry): the key's fields in the order they decide.
        let mut keyed = Vec::new();
        for route in routes {
            let route_hosts: Vec<Option<u32>> = if route.hostnames.is_empty() {
                vec![None]
            } else {
                route
                    .hostnames
                    .iter()
                    .map(|h| {
                        hostnames.push(h.clone());
                        Some((hostnames.len() - 1) as u32)
                    })
                    .collect()
            };
            for (rule_index, rule) in route.rules.iter().enumerate() {
                let backends = if rule.backends().is_empty() && rule.forwards() {
                    vec![BackendRef {
                        service: parent.clone(),
                        port: None,
                        weight: 1,
                    }]
                } else {
                    rule.backends().to_vec()
                };
                let compiled = rules.len() as u32;
                rules.push(CompiledRule {
                    route: route.clone(),
                    rule_index,
                    backends: Backends::new(backends),
                });
                for (match_index, m) in rule.matches().iter().enumerate() {
                    for host in &route_hosts {
                        let specificity = host
                            .map(|h| hostnames[h as usize].specificity())
                            .unwrap_or((0, 0));
                        let key = (
                            Reverse(specificity),
                            Reverse(R::precedence(m)),
                            route.creation_timestamp_ms,
                            // `namespace/name` as a string: its order is the spec's.
                            route.name.to_string(),
                            rule_index,
                            match_index,
                        );
                        let entry = Entry {
                            host: *host,
                            rule: compiled,
                            matched: match_index as u32,
                        };
                        keyed.push((key, entry));
                    }
                }
            }
        }
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        Table {
            rules,
            hostnames,
            entries: keyed.into_iter().map(|(_, entry)| entry).collect(),
        }
    }

    /// The rule for a request: the first match in precedence order. `None`: no rule
    /// matches, and GAMMA refuses the request.
    pub fn select(&self, request: &R::Request<'_>) -> Option<Selection<'_, R>> {
        let host = R::authority(request).map(request_host);
        for entry in &self.entries {
            if let Some(index) = entry.host {
                let pattern = &self.hostnames[index as usize];
                if !host.is_some_and(|host| pattern.matches(host)) {
                    continue;
                }
            }
            let compiled = &self.rules[entry.rule as usize];
            let m = &compiled.rule().matches()[entry.matched as usize];
            if R::is_match(m, request) {
                return Some(Selection {
                    rule: compiled,
                    index: entry.rule as usize,
                    matched: m,
                    match_index: entry.matched as usize,
                });
            }
        }
        None
    }

    /// Every rule of the table, each once, in the routes' order.
    pub fn rules(&self) -> &[CompiledRule<R>] {
        &self.rules
    }
}

/// The routes that decide one group of callers' requests to a port.
#[derive(Debug, Clone)]
pub enum RouteTable {
    Http(HttpTable),
    Grpc(GrpcTable),
}

/// The routes of one port, by group of callers.
#[derive(Debug, Clone)]
struct PortRoutes {
    port: u16,
    /// The producer's routes (in the service's namespace), for every caller without
    /// consumer routes of its own.
    producer: Option<RouteTable>,
    /// Consumer routes by the callers' namespace, sorted.
    consumers: Vec<(String, RouteTable)>,
}

/// The routes attached to one service, compiled for every port and group of callers.
#[derive(Debug, Clone, Default)]
pub struct ServiceRoutes {
    /// Only the ports some route attaches to, sorted.
    ports: Vec<PortRoutes>,
}

impl ServiceRoutes {
    /// Compiles the routes, among `http` and `grpc`, that attach to `service`.
    pub fn compile(
        service: &Service,
        http: &[Arc<HttpRoute>],
        grpc: &[Arc<GrpcRoute>],
    ) -> ServiceRoutes {
        let mut ports = Vec::new();
        let mut service_ports: Vec<_> = service.ports.iter().collect();
        service_ports.sort_by_key(|p| p.port);
        for port in service_ports {
            let (takes_http, takes_grpc) = match port.protocol {
                Protocol::Tcp => (false, false),
                Protocol::Http1 => (true, false),
                Protocol::Http2 | Protocol::Grpc => (true, true),
            };
            let http: Vec<Arc<HttpRoute>> = attached(http, &service.name, port.port, takes_http);
            let grpc: Vec<Arc<GrpcRoute>> = attached(grpc, &service.name, port.port, takes_grpc);
            let mut namespaces: Vec<&str> = http
                .iter()
                .map(|r| r.name.namespace.as_str())
                .chain(grpc.iter().map(|r| r.name.namespace.as_str()))
                .collect();
            namespaces.sort_unstable();
            namespaces.dedup();
            let mut producer = None;
            let mut consumers = Vec::new();
            for namespace in namespaces {
                let of = |r: &ResourceName| r.namespace == namespace;
                let grpc: Vec<_> = grpc.iter().filter(|r| of(&r.name)).cloned().collect();
                let table = if grpc.is_empty() {
                    let http: Vec<_> = http.iter().filter(|r| of(&r.name)).cloned().collect();
                    RouteTable::Http(Table::compile(&http, &service.name))
                } else {
                    RouteTable::Grpc(Table::compile(&grpc, &service.name))
                };
                if namespace == service.name.namespace {
                    producer = Some(table);
                } else {
                    consumers.push((namespace.to_owned(), table));
                }
            }
            if producer.is_some() || !consumers.is_empty() {
                ports.push(PortRoutes {
                    port: port.port,
                    producer,
                    consumers,
                });
            }
        }
        ServiceRoutes { ports }
    }

    /// Compiles the tables of every service some route attaches to; services no
    /// route attaches to have no entry.
    pub fn compile_all<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        http: impl IntoIterator<Item = &'a Arc<HttpRoute>>,
        grpc: impl IntoIterator<Item = &'a Arc<GrpcRoute>>,
    ) -> HashMap<ResourceName, ServiceRoutes> {
        let mut by_http: HashMap<&ResourceName, Vec<Arc<HttpRoute>>> = HashMap::new();
        for route in http {
            for parent in &route.parents {
                let attached = by_http.entry(&parent.service).or_default();
                // A route with two parents on one service (two ports) counts once.
                if !attached.iter().any(|r| Arc::ptr_eq(r, route)) {
                    attached.push(route.clone());
                }
            }
        }
        let mut by_grpc: HashMap<&ResourceName, Vec<Arc<GrpcRoute>>> = HashMap::new();
        for route in grpc {
            for parent in &route.parents {
                let attached = by_grpc.entry(&parent.service).or_default();
                if !attached.iter().any(|r| Arc::ptr_eq(r, route)) {
                    attached.push(route.clone());
                }
            }
        }
        let mut compiled = HashMap::new();
        for service in services {
            let http = by_http
                .get(&service.name)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let grpc = by_grpc
                .get(&service.name)
                .map(Vec::as_slice)
                .unwrap_or_default();
            if http.is_empty() && grpc.is_empty() {
                continue;
            }
            let routes = ServiceRoutes::compile(service, http, grpc);
            if !routes.is_empty() {
                compiled.insert(service.name.clone(), routes);
            }
        }
        compiled
    }

    /// Whether no route attaches to the service (then requests go as without routes).
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// The routes that decide requests to `port` from a caller in `namespace`;
    /// `None`: none do, and the request goes as without routes.
    pub fn for_caller(&self, port: u16, namespace: &str) -> Option<&RouteTable> {
        let port = self.ports.iter().find(|p| p.port == port)?;
        port.consumers
            .iter()
            .find(|(n, _)| n == namespace)
            .map(|(_, table)| table)
            .or(port.producer.as_ref())
    }
}

/// The routes with a parent that is `service` on `port` (or on every port).
fn attached<R>(
    routes: &[Arc<Route<R>>],
    service: &ResourceName,
    port: u16,
    kind_fits: bool,
) -> Vec<Arc<Route<R>>> {
    if !kind_fits {
        return Vec::new();
    }
    routes
        .iter()
        .filter(|r| {
            r.parents
                .iter()
                .any(|p| p.service == *service && p.port.is_none_or(|p| p == port))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests;
