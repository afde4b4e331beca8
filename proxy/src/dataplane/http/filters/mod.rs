//! A matched rule's filters on the data path (Gateway API HTTPRoute/GRPCRoute
//! filters and Weft's own), run in the order the rule writes them.
//!
//! [`on_request`] runs once per request after route selection and before the
//! request is forwarded: a filter may change the request, or answer it itself (a
//! redirect, an injected abort, a rate limit), and then nothing is forwarded.
//! [`on_response`] runs on the response the client gets, forwarded or answered here.
//!
//! # Layout
//! - `headers`: RequestHeaderModifier and ResponseHeaderModifier.
//! - `rewrite`: URLRewrite (path and host, before forwarding) and RequestRedirect
//!   (answered here).
//!
//! A filter the data path does not carry out yet never reaches here: the
//! discovery client refuses (NACKs) a route that uses one.

use http::{Request, Response};
use weft_proto::model::route::Filter;

use super::super::Context;
use super::body::{ProxyBody, ReceivedBody};
use super::routing::Matched;

mod headers;
mod rewrite;

/// Runs the rule's request filters; `Some` is the answer when one of them answers
/// the request itself (the caller counts its status and runs [`on_response`] on it).
pub(super) async fn on_request(
    _cx: &Context,
    rule: &Matched,
    request: &mut Request<ReceivedBody>,
    _grpc: bool,
) -> Option<Response<ProxyBody>> {
    for filter in rule.filters() {
        match filter {
            Filter::RequestHeaderModifier(modifier) => {
                headers::modify(request.headers_mut(), modifier)
            }
            Filter::UrlRewrite(rewrite) => {
                if let Err(error) = rewrite::rewrite(request, rewrite, rule.path_match()) {
                    return Some(rewrite::refuse(error));
                }
            }
            Filter::RequestRedirect(redirect) => {
                return Some(rewrite::redirect(request, redirect, rule));
            }
            // Runs on the response.
            Filter::ResponseHeaderModifier(_) => {}
            // Refused by the discovery client until carried out here.
            Filter::RequestMirror(_) | Filter::Fault(_) | Filter::LocalRateLimit(_) => {}
        }
    }
    None
}

/// Runs the rule's response filters on the response the client gets.
pub(super) fn on_response(rule: &Matched, response: &mut Response<ProxyBody>) {
    for filter in rule.filters() {
        if let Filter::ResponseHeaderModifier(modifier) = filter {
            headers::modify(response.headers_mut(), modifier);
        }
    }
}
