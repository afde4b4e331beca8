//! Route selection on the outbound path: which rule of a service's HTTPRoutes or
//! GRPCRoutes (Gateway API, GAMMA; DESIGN.md decision 14) a request matches, and
//! which of that rule's weighted backends it goes to.
//!
//! It runs once per request, before forwarding, on the snapshot current when the
//! request arrived. A destination whose service no route attaches to (the common
//! case) returns after one relaxed load and allocates nothing. When routes do
//! attach, the request goes to the chosen backend service's own destination: its
//! endpoints, balancer, circuit breakers and retries apply as if the client had
//! called it directly. A port with routes refuses a request no rule matches (404;
//! gRPC `UNIMPLEMENTED`, as for an unknown host), and a matched rule with no
//! backend (every weight 0, or its service gone) is answered 500 (gRPC
//! `INTERNAL`), both through the rescue table. A rule that answers itself (a
//! RequestRedirect) has no backend by design: the request stays with the service it
//! was sent to, and the rule's filter answers.
//!
//! The rule chosen travels with the request ([`Matched`]): its filters run in
//! [`super::filters`], its timeouts and retries replace the service's for the
//! request.

use std::sync::{Arc, Weak};

use http::Request;
use weft_proto::model::route::{
    CompiledRule, Filter, GrpcRequest, GrpcRoute, HttpRequest, HttpRoute, InForce, PathMatch,
    Route, RouteRule, RouteTable, RuleRetry, Selection, ServiceRoutes,
};
use weft_proto::model::{Resilience, ResourceName};

use crate::snapshot::Target;

use crate::metrics::ServiceMetrics;

use super::super::destination::Destination;
use super::super::error::ForwardError;
use super::super::registry::Routes;
use super::super::Context;
use super::headers;

/// Where a request goes: the destination, and when a route chose it, the metric
/// handles with that route's label (`None`: the destination's own).
pub(super) struct Chosen {
    pub destination: Arc<Destination>,
    pub metrics: Option<Arc<ServiceMetrics>>,
    /// The rule that chose the destination; `None` when no route applies.
    pub rule: Option<Matched>,
}

impl Chosen {
    fn unrouted(destination: Arc<Destination>) -> Chosen {
        Chosen {
            destination,
            metrics: None,
            rule: None,
        }
    }
}

/// The rule a request matched: a route (shared with the snapshot, so holding it
/// costs a reference count), the rule's index in it, and what its filters need of
/// the selection.
#[derive(Clone)]
pub(super) struct Matched {
    pub rule: RuleOf,
    /// Which of the rule's matches selected the request (a ReplacePrefixMatch
    /// replaces its PathPrefix).
    pub match_index: usize,
    /// The service port the request was sent to (a redirect keeps it).
    pub port: u16,
}

/// A rule, by its route and index there.
#[derive(Clone)]
pub(super) enum RuleOf {
    Http(Arc<HttpRoute>, usize),
    Grpc(Arc<GrpcRoute>, usize),
}

impl Matched {
    pub fn route_name(&self) -> &ResourceName {
        match &self.rule {
            RuleOf::Http(route, _) => &route.name,
            RuleOf::Grpc(route, _) => &route.name,
        }
    }

    /// The rule's index in its route.
    pub fn rule_index(&self) -> usize {
        match &self.rule {
            RuleOf::Http(_, index) | RuleOf::Grpc(_, index) => *index,
        }
    }

    /// The rule's filters, in the order they are written.
    pub fn filters(&self) -> &[Filter] {
        match &self.rule {
            RuleOf::Http(route, index) => &route.rules[*index].filters,
            RuleOf::Grpc(route, index) => &route.rules[*index].filters,
        }
    }

    /// The path match that selected the request; `None` for a gRPC rule.
    pub fn path_match(&self) -> Option<&PathMatch> {
        match &self.rule {
            RuleOf::Http(route, index) => route.rules[*index]
                .matches
                .get(self.match_index)
                .map(|m| &m.path),
            RuleOf::Grpc(..) => None,
        }
    }

    /// The timeouts and retries for the request: the service's (`service`, that of
    /// the backend it goes to), with the rule's in their place.
    pub fn in_force<'a>(&'a self, service: &'a Resilience) -> InForce<'a> {
        match &self.rule {
            RuleOf::Http(route, index) => {
                let rule = &route.rules[*index];
                let retry = rule.retry.as_ref().map(RuleRetry::Http);
                InForce::rule(service, rule.timeouts, retry)
            }
            RuleOf::Grpc(route, index) => {
                let rule = &route.rules[*index];
                let retry = rule.retry.as_ref().map(RuleRetry::Grpc);
                InForce::rule(service, rule.timeouts, retry)
            }
        }
    }
}

/// A routed destination's routes, resolved when the registry applied the snapshot
/// so that a request does no map lookup: the compiled routes of its service, and
/// for each rule of the table this proxy's callers use (in the table's order) each
/// backend's destination and metric handles (in the rule's order).
pub struct Routing {
    routes: Arc<ServiceRoutes>,
    rules: Vec<RuleTargets>,
}

struct RuleTargets {
    /// `None`: no destination serves the backend (the proxy answers 500).
    backends: Vec<Option<BackendTarget>>,
    /// The handles with the route's label for the parent service, which a rule
    /// that answers itself (a redirect) is counted against.
    parent_metrics: Option<Arc<ServiceMetrics>>,
}

struct BackendTarget {
    /// Weak: routes may point destinations at each other, and a cycle of strong
    /// references would keep removed destinations alive. `None`: the parent itself.
    destination: Option<Weak<Destination>>,
    metrics: Option<Arc<ServiceMetrics>>,
}

impl std::fmt::Debug for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routing")
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

impl Routing {
    /// The routing of the destination `target` for callers in `namespace`, or
    /// `None` when no route attaches to its port for them.
    pub fn resolve(
        target: &Target,
        namespace: &str,
        service_routes: &Arc<ServiceRoutes>,
        routes: &Routes,
    ) -> Option<Routing> {
        let table = service_routes.for_caller(target.port, namespace)?;
        let rules = match table {
            RouteTable::Http(table) => resolve_rules(table.rules(), target, routes),
            RouteTable::Grpc(table) => resolve_rules(table.rules(), target, routes),
        };
        Some(Routing {
            routes: service_routes.clone(),
            rules,
        })
    }
}

fn resolve_rules<R: RouteRule>(
    rules: &[CompiledRule<R>],
    parent: &Target,
    routes: &Routes,
) -> Vec<RuleTargets> {
    let metrics = |route: &ResourceName, service: &ResourceName| {
        routes
            .route_metrics
            .get(route)
            .and_then(|by_backend| by_backend.get(service))
            .cloned()
    };
    rules
        .iter()
        .map(|rule| {
            let route = &rule.route.name;
            let backends = rule
                .backends
                .refs()
                .iter()
                .map(|backend| {
                    let port = backend.port.unwrap_or(parent.port);
                    let destination = if backend.service == parent.service && port == parent.port {
                        None
                    } else {
                        let key = Target {
                            service: backend.service.clone(),
                            port,
                        };
                        Some(Arc::downgrade(routes.by_target.get(&key)?))
                    };
                    Some(BackendTarget {
                        destination,
                        metrics: metrics(route, &backend.service),
                    })
                })
                .collect();
            RuleTargets {
                backends,
                parent_metrics: metrics(route, &parent.service),
            }
        })
        .collect()
}

/// Where `request` goes: `destination` itself when no route applies, else the
/// backend its routes choose. On an error the request is refused, and counted
/// against the destination it was sent to.
pub(super) fn select<B>(
    cx: &Context,
    destination: Arc<Destination>,
    request: &Request<B>,
) -> Result<Chosen, (ForwardError, Arc<Destination>)> {
    if !destination.routed() {
        return Ok(Chosen::unrouted(destination));
    }
    let (Some(target), Some(routing)) = (destination.target.as_ref(), destination.routing()) else {
        return Ok(Chosen::unrouted(destination));
    };
    // The same table the routing was resolved against: this proxy's namespace.
    let Some(table) = routing
        .routes
        .for_caller(target.port, &cx.shared.config.namespace)
    else {
        return Ok(Chosen::unrouted(destination));
    };
    let authority = headers::authority(request);
    let random: u32 = rand::random();
    let uri = request.uri();
    let chosen = match table {
        RouteTable::Http(table) => {
            let http = HttpRequest {
                method: request.method(),
                path: uri.path(),
                query: uri.query(),
                authority,
                headers: request.headers(),
            };
            let selected = table.select(&http);
            selected.map(|s| decided(s, RuleOf::Http, target.port, random))
        }
        RouteTable::Grpc(table) => {
            // A request that is not a gRPC call (`/Service/Method`) matches no rule.
            GrpcRequest::from_path(uri.path(), authority, request.headers())
                .and_then(|call| table.select(&call))
                .map(|s| decided(s, RuleOf::Grpc, target.port, random))
        }
    };
    let Some((rule, index, forwards, picked)) = chosen else {
        return Err((ForwardError::NoRuleMatched, destination));
    };
    let Some(targets) = routing.rules.get(index) else {
        return Err((ForwardError::NoBackend, destination));
    };
    if !forwards {
        // A rule that answers itself (a redirect) has no backend by design: its
        // filter answers, counted against the service the request was sent to.
        return Ok(Chosen {
            destination,
            metrics: targets.parent_metrics.clone(),
            rule: Some(rule),
        });
    }
    let Some(backend) = picked.and_then(|i| targets.backends.get(i)?.as_ref()) else {
        return Err((ForwardError::NoBackend, destination));
    };
    let backend_destination = match &backend.destination {
        // A route that names its own parent.
        None => destination,
        Some(weak) => match weak.upgrade() {
            Some(found) => found,
            None => return Err((ForwardError::NoBackend, destination)),
        },
    };
    Ok(Chosen {
        destination: backend_destination,
        metrics: backend.metrics.clone(),
        rule: Some(rule),
    })
}

/// What a selection decides: the rule, its position in the table, whether it
/// forwards, and the backend its weights pick with `random` (by position).
fn decided<R: RouteRule>(
    selection: Selection<'_, R>,
    rule_of: fn(Arc<Route<R>>, usize) -> RuleOf,
    port: u16,
    random: u32,
) -> (Matched, usize, bool, Option<usize>) {
    let compiled = selection.rule;
    let matched = Matched {
        rule: rule_of(compiled.route.clone(), compiled.rule_index),
        match_index: selection.match_index,
        port,
    };
    let forwards = compiled.rule().forwards();
    (
        matched,
        selection.index,
        forwards,
        compiled.backends.pick_index(random),
    )
}
