//! Checks of routes against the rest of the mesh, and their creation time.
//!
//! A route must attach to services that exist, on ports that carry its kind
//! (HTTPRoute: http1, http2 or grpc; GRPCRoute: http2 or grpc), and send to
//! backends and mirrors that exist. As for authorization policies, a route naming
//! a missing service is most likely a typo, and refusing it beats a share of the
//! traffic silently answered 500. A service deleted later leaves its routes in
//! place; the data path answers 500 for the share sent to a missing backend, as the
//! Gateway API says.
//!
//! The Gateway API breaks precedence ties in favour of the oldest route, so the
//! control plane stamps a route with the time it was first applied and keeps that
//! stamp when the route is applied again.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use weft_proto::model::route::{Filter, Route, RouteRule};
use weft_proto::model::{Protocol, ResourceName, Service};
use weft_proto::resource::{Body, Kind};
use weft_proto::v1;

use super::ApplyError;
use crate::store::{Store, StoreError};

/// The protocols a route kind can steer.
pub(crate) fn carries(kind: Kind, protocol: Protocol) -> bool {
    match kind {
        Kind::GrpcRoute => matches!(protocol, Protocol::Http2 | Protocol::Grpc),
        _ => matches!(protocol, Protocol::Http1 | Protocol::Http2 | Protocol::Grpc),
    }
}

pub(crate) fn protocols(kind: Kind) -> &'static str {
    match kind {
        Kind::GrpcRoute => "http2 or grpc",
        _ => "http1, http2 or grpc",
    }
}

/// Checks a route body's references; other bodies pass.
pub fn check(body: &Body, services: &BTreeMap<String, Service>) -> Result<(), ApplyError> {
    match body {
        Body::HttpRoute(route) => check_route(Kind::HttpRoute, route, services),
        Body::GrpcRoute(route) => check_route(Kind::GrpcRoute, route, services),
        _ => Ok(()),
    }
}

fn check_route<R: RouteRule>(
    kind: Kind,
    route: &Route<R>,
    services: &BTreeMap<String, Service>,
) -> Result<(), ApplyError> {
    let name = &route.name;
    let invalid = |field: String, reason: String| {
        ApplyError::Invalid(format!("{kind} {name}: {field}: {reason}"))
    };
    for (i, parent) in route.parents.iter().enumerate() {
        let field = format!("spec.parentRefs[{i}]");
        let service = existing(services, &parent.service)
            .ok_or_else(|| invalid(field.clone(), missing(&parent.service)))?;
        match parent.port {
            Some(port) => {
                let Some(found) = service.ports.iter().find(|p| p.port == port) else {
                    return Err(invalid(
                        format!("{field}.port"),
                        format!(
                            "{port} is not a port of service {} (ports: {})",
                            parent.service,
                            ports(service)
                        ),
                    ));
                };
                if !carries(kind, found.protocol) {
                    return Err(invalid(
                        format!("{field}.port"),
                        format!(
                            "port {port} of service {} is {}; a {kind} needs {}",
                            parent.service,
                            found.protocol,
                            protocols(kind)
                        ),
                    ));
                }
            }
            None if !service.ports.iter().any(|p| carries(kind, p.protocol)) => {
                return Err(invalid(
                    field,
                    format!(
                        "service {} has no port a {kind} can steer ({}; it has {})",
                        parent.service,
                        protocols(kind),
                        ports(service)
                    ),
                ));
            }
            None => {}
        }
    }
    for (i, rule) in route.rules.iter().enumerate() {
        for (j, backend) in rule.backends().iter().enumerate() {
            let field = format!("spec.rules[{i}].backendRefs[{j}]");
            check_target(services, &backend.service, backend.port)
                .map_err(|reason| invalid(field, reason))?;
        }
        for (j, filter) in rule.filters().iter().enumerate() {
            if let Filter::RequestMirror(mirror) = filter {
                let field = format!("spec.rules[{i}].filters[{j}].requestMirror.backendRef");
                check_target(services, &mirror.service, mirror.port)
                    .map_err(|reason| invalid(field, reason))?;
            }
        }
    }
    Ok(())
}

fn existing<'s>(
    services: &'s BTreeMap<String, Service>,
    name: &ResourceName,
) -> Option<&'s Service> {
    services.get(&name.to_string())
}

fn missing(service: &ResourceName) -> String {
    format!("service {service} does not exist (apply the Service first, or in the same request)")
}

fn ports(service: &Service) -> String {
    let ports: Vec<String> = service
        .ports
        .iter()
        .map(|p| format!("{}/{}", p.port, p.protocol))
        .collect();
    ports.join(", ")
}

/// A backend or mirror: the service exists, and the port, if named, is one of its.
fn check_target(
    services: &BTreeMap<String, Service>,
    service: &ResourceName,
    port: Option<u16>,
) -> Result<(), String> {
    let found = existing(services, service).ok_or_else(|| missing(service))?;
    if let Some(port) = port {
        if !found.ports.iter().any(|p| p.port == port) {
            return Err(format!(
                "port {port} is not a port of service {service} (ports: {})",
                ports(found)
            ));
        }
    }
    Ok(())
}

/// Sets a route's creation time: the stored route's when there is one, now
/// otherwise. Other bodies are left alone.
pub async fn stamp(store: &dyn Store, body: &mut Body) -> Result<(), ApplyError> {
    let name = body.name().to_string();
    let (kind, created) = match body {
        Body::HttpRoute(r) => (Kind::HttpRoute, &mut r.creation_timestamp_ms),
        Body::GrpcRoute(r) => (Kind::GrpcRoute, &mut r.creation_timestamp_ms),
        _ => return Ok(()),
    };
    let corrupt = |e: prost::DecodeError| StoreError::Corrupt(format!("{kind} {name}: {e}"));
    let stored = match store.get(kind, &name).await? {
        None => 0,
        Some(record) if kind == Kind::HttpRoute => {
            v1::HttpRoute::decode(record.body.as_slice())
                .map_err(corrupt)?
                .creation_timestamp_ms
        }
        Some(record) => {
            v1::GrpcRoute::decode(record.body.as_slice())
                .map_err(corrupt)?
                .creation_timestamp_ms
        }
    };
    *created = if stored != 0 { stored } else { now_ms() };
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
