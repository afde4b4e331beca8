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
//! `INTERNAL`), both through the rescue table.
//!
//! The rule chosen travels with the request ([`Matched`]): its filters run in
//! [`super::filters`], its timeouts and retries replace the service's for the
//! request. What the data path does not carry out yet the discovery client refuses
//! (NACKs, [`crate::discovery`]), so nothing a rule asks for is silently ignored.

use std::sync::Arc;

use http::Request;
use weft_proto::model::route::{
    Filter, GrpcRequest, GrpcRoute, HttpRequest, HttpRoute, RouteTable,
};
use weft_proto::model::ResourceName;

use crate::snapshot::Target;

use crate::metrics::ServiceMetrics;

use super::super::destination::Destination;
use super::super::error::ForwardError;
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
/// costs a reference count) and the rule's index in it.
#[derive(Clone)]
pub(super) enum Matched {
    Http(Arc<HttpRoute>, usize),
    Grpc(Arc<GrpcRoute>, usize),
}

impl Matched {
    pub fn route_name(&self) -> &ResourceName {
        match self {
            Matched::Http(route, _) => &route.name,
            Matched::Grpc(route, _) => &route.name,
        }
    }

    /// The rule's filters, in the order they are written.
    pub fn filters(&self) -> &[Filter] {
        match self {
            Matched::Http(route, index) => &route.rules[*index].filters,
            Matched::Grpc(route, index) => &route.rules[*index].filters,
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
            table.select(&http).map(|s| {
                let matched = Matched::Http(s.rule.route.clone(), s.rule.rule_index);
                (matched, s.rule.backends.pick(random))
            })
        }
        RouteTable::Grpc(table) => {
            // A request that is not a gRPC call (`/Service/Method`) matches no rule.
            GrpcRequest::from_path(uri.path(), authority, request.headers())
                .and_then(|call| table.select(&call))
                .map(|s| {
                    let matched = Matched::Grpc(s.rule.route.clone(), s.rule.rule_index);
                    (matched, s.rule.backends.pick(random))
                })
        }
    };
    let (rule, backend) = match chosen {
        None => return Err((ForwardError::NoRuleMatched, destination)),
        Some((_, None)) => return Err((ForwardError::NoBackend, destination)),
        Some((rule, Some(backend))) => (rule, backend),
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
    let metrics = routes
        .route_metrics
        .get(rule.route_name())
        .and_then(|by_backend| by_backend.get(&backend.service))
        .cloned();
    Ok(Chosen {
        destination: backend_destination,
        metrics,
        rule: Some(rule),
    })
}
