//! Debug response headers (`--debug-headers`): which route rule chose a request and
//! which backend service it was sent to, so that an operator can check routes with
//! curl. Off by default: they tell clients how the mesh is laid out inside, and cost
//! a few small allocations per request.

use http::{HeaderMap, HeaderName, HeaderValue};
use weft_proto::model::route::Filter;

use super::super::destination::Destination;
use super::routing::Matched;

/// The route (`namespace/name`) whose rule chose the request.
pub const ROUTE: HeaderName = HeaderName::from_static("weft-route");
/// That rule's index in the route.
pub const RULE: HeaderName = HeaderName::from_static("weft-route-rule");
/// The service and port the request was sent to (`namespace/name:port`); absent
/// when nothing was forwarded (a redirect) or the destination is no service (the
/// local application, a passthrough).
pub const BACKEND: HeaderName = HeaderName::from_static("weft-backend");

/// Adds the debug headers to a response, replacing any an upstream proxy added (the
/// one nearest the client speaks for its own choice).
pub(super) fn name_choice(
    headers: &mut HeaderMap,
    destination: &Destination,
    rule: Option<&Matched>,
) {
    let mut forwarded = true;
    if let Some(rule) = rule {
        if let Ok(route) = HeaderValue::from_str(&rule.route_name().to_string()) {
            headers.insert(ROUTE, route);
        }
        headers.insert(RULE, HeaderValue::from(rule.rule_index()));
        forwarded = !rule
            .filters()
            .iter()
            .any(|f| matches!(f, Filter::RequestRedirect(_)));
    } else {
        headers.remove(ROUTE);
        headers.remove(RULE);
    }
    match &destination.target {
        Some(target) if forwarded => {
            let backend = format!("{}:{}", target.service, target.port);
            if let Ok(value) = HeaderValue::from_str(&backend) {
                headers.insert(BACKEND, value);
            }
        }
        _ => {
            headers.remove(BACKEND);
        }
    }
}
