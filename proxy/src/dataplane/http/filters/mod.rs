//! A matched rule's filters on the data path (Gateway API HTTPRoute/GRPCRoute
//! filters and Weft's own), run in the order the rule writes them.
//!
//! [`on_request`] runs once per request after route selection and before the
//! request is forwarded: a filter may change the request, or answer it itself (a
//! redirect, an injected abort, a rate limit), and then nothing is forwarded.
//! [`on_response`] runs on the response the client gets.
//!
//! A filter the data path does not carry out yet never reaches here: the
//! discovery client refuses (NACKs) a route that uses one.

use http::{Request, Response};
use weft_proto::model::route::Filter;

use super::super::Context;
use super::body::{ProxyBody, ReceivedBody};
use super::routing::Matched;

/// Runs the rule's request filters; `Some` is the answer when one of them answers
/// the request itself.
pub(super) async fn on_request(
    _cx: &Context,
    rule: &Matched,
    _request: &mut Request<ReceivedBody>,
    _grpc: bool,
) -> Option<Response<ProxyBody>> {
    for filter in rule.filters() {
        match filter {
            // Refused by the discovery client until carried out here.
            Filter::RequestHeaderModifier(_)
            | Filter::ResponseHeaderModifier(_)
            | Filter::RequestMirror(_)
            | Filter::RequestRedirect(_)
            | Filter::UrlRewrite(_)
            | Filter::Fault(_)
            | Filter::LocalRateLimit(_) => {}
        }
    }
    None
}

/// Runs the rule's response filters on the response the client gets.
pub(super) fn on_response(rule: &Matched, _response: &mut Response<ProxyBody>) {
    // Refused by the discovery client until carried out here.
    let _ = rule.filters();
}
