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

use std::sync::Arc;

use http::Request;
use weft_proto::model::route::{
    BackendRef, Filter, GrpcRequest, GrpcRoute, HttpRequest, HttpRoute, InForce, PathMatch, Route,
    RouteRule, RouteTable, RuleRetry, Selection,
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
    let Some(target) = destination.target.as_ref() else {
        return Ok(Chosen::unrouted(destination));
    };
    let routes = cx.registry.routes();
    let Some(service_routes) = routes.snapshot.routes_of(&target.service) else {
        return Ok(Chosen::unrouted(destination));
    };
    let Some(table) = service_routes.for_caller(target.port, &cx.shared.config.namespace) else {
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
    let (rule, backend) = match chosen {
        None => return Err((ForwardError::NoRuleMatched, destination)),
        // A rule that answers itself (a redirect) has no backend by design: its
        // filter answers, counted against the service the request was sent to.
        Some((rule, false, _)) => {
            let metrics = route_metrics(&routes, &rule, &target.service);
            return Ok(Chosen {
                destination,
                metrics,
                rule: Some(rule),
            });
        }
        Some((_, true, None)) => return Err((ForwardError::NoBackend, destination)),
        Some((rule, true, Some(backend))) => (rule, backend),
    };
    let port = backend.port.unwrap_or(target.port);
    let backend_destination = if backend.service == target.service && port == target.port {
        // A route that names its own parent: no second lookup.
        destination.clone()
    } else {
        let key = Target {
            service: backend.service.clone(),
            port,
        };
        match routes.by_target.get(&key) {
            Some(found) => found.clone(),
            None => return Err((ForwardError::NoBackend, destination)),
        }
    };
    let metrics = route_metrics(&routes, &rule, &backend.service);
    Ok(Chosen {
        destination: backend_destination,
        metrics,
        rule: Some(rule),
    })
}

/// What a selection decides: the rule, whether it forwards, and the backend its
/// weights pick with `random`.
fn decided<'t, R: RouteRule>(
    selection: Selection<'t, R>,
    rule_of: fn(Arc<Route<R>>, usize) -> RuleOf,
    port: u16,
    random: u32,
) -> (Matched, bool, Option<&'t BackendRef>) {
    let compiled = selection.rule;
    let matched = Matched {
        rule: rule_of(compiled.route.clone(), compiled.rule_index),
        match_index: selection.match_index,
        port,
    };
    let forwards = compiled.rule().forwards();
    (matched, forwards, compiled.backends.pick(random))
}

/// The metric handles with the rule's route label for requests to `service`.
fn route_metrics(
    routes: &Routes,
    rule: &Matched,
    service: &ResourceName,
) -> Option<Arc<ServiceMetrics>> {
    routes
        .route_metrics
        .get(rule.route_name())
        .and_then(|by_backend| by_backend.get(service))
        .cloned()
}
