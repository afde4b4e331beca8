//! A matched rule's filters on the data path (Gateway API HTTPRoute/GRPCRoute
//! filters and Weft's own), run in the order the rule writes them.
//!
//! [`on_request`] runs once per request after route selection and before the
//! request is forwarded: a filter may change the request, or answer it itself (a
//! redirect, an injected abort, a rate limit), and then nothing is forwarded.
//! [`on_response`] runs on the response the client gets, forwarded or answered here.
//!
//! Weft's own filters and the mirror keep per-route state (counters, rate-limit
//! buckets) beside the route table ([`state`]); a rule without them never reads it.
//! What the proxy answers itself is never forwarded, so it is never retried
//! ([`fault`] says what that means for injected faults).
//!
//! # Layout
//! - `headers`: RequestHeaderModifier and ResponseHeaderModifier.
//! - `rewrite`: URLRewrite (path and host, before forwarding) and RequestRedirect
//!   (answered here).
//! - `fault`, `rate_limit`: weft.io/Fault and weft.io/LocalRateLimit (answered here
//!   when they fire).
//! - `mirror`, `tee`: RequestMirror, and the copy of a body still streaming.
//! - `state`: per-route counters and buckets, kept across pushes.

mod fault;
mod headers;
mod mirror;
mod rate_limit;
mod rewrite;
pub mod state;
pub mod tee;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use weft_proto::model::route::Filter;

use super::super::Context;
use super::body::{ProxyBody, ReceivedBody};
use super::routing::Matched;

pub use state::State;

/// Runs the rule's request filters; `Some` is the answer when one of them answers
/// the request itself (the caller counts its status and runs [`on_response`] on it).
pub(super) async fn on_request(
    cx: &Arc<Context>,
    rule: &Matched,
    request: &mut Request<ReceivedBody>,
    grpc: bool,
) -> Option<Response<ProxyBody>> {
    let mut mirrors = false;
    for (index, filter) in rule.filters().iter().enumerate() {
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
            Filter::Fault(fault) => {
                let Some(route) = route_state(cx, rule) else {
                    continue;
                };
                // Boxed: the delay's timer would otherwise grow the future of
                // every request, filters or not.
                if let Some(answer) = Box::pin(fault::apply(fault, &route.metrics)).await {
                    return Some(answer);
                }
            }
            Filter::LocalRateLimit(limit) => {
                let Some(route) = route_state(cx, rule) else {
                    continue;
                };
                if let Some(bucket) = route.bucket(rule.rule_index(), index, limit) {
                    if let Some(answer) = rate_limit::apply(bucket, &route.metrics, grpc) {
                        return Some(answer);
                    }
                }
            }
            // Sent below, once no filter answered the request.
            Filter::RequestMirror(_) => mirrors = true,
            // Runs on the response.
            Filter::ResponseHeaderModifier(_) => {}
        }
    }
    if mirrors {
        if let Some(route) = route_state(cx, rule) {
            for filter in rule.filters() {
                if let Filter::RequestMirror(to) = filter {
                    mirror::send(cx, to, request, &route.metrics, grpc);
                }
            }
        }
    }
    None
}

/// The state of the matched rule's route. `None` only while a push that removed
/// the route races the request; its filters are then skipped.
fn route_state(cx: &Context, rule: &Matched) -> Option<Arc<state::RouteState>> {
    cx.registry
        .routes()
        .filters
        .route(rule.route_name())
        .cloned()
}

/// An answer the proxy makes itself: `status` with a one-line body, or for gRPC
/// (`grpc`) HTTP 200, trailers-only, with `grpc_status`, as the rescue table
/// answers (`weft-proxy-error` tells an operator the proxy answered).
fn answer(
    grpc: bool,
    status: StatusCode,
    grpc_status: u16,
    message: &'static str,
) -> Response<ProxyBody> {
    let mut response = Response::new(match grpc {
        true => ProxyBody::empty(),
        false => ProxyBody::full(Bytes::from(format!("{message}\n"))),
    });
    if !grpc {
        *response.status_mut() = status;
    }
    let headers = response.headers_mut();
    headers.insert("weft-proxy-error", HeaderValue::from_static(message));
    if grpc {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from(grpc_status));
        headers.insert("grpc-message", HeaderValue::from_static(message));
    } else {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    response
}

/// Runs the rule's response filters on the response the client gets.
pub(super) fn on_response(rule: &Matched, response: &mut Response<ProxyBody>) {
    for filter in rule.filters() {
        if let Filter::ResponseHeaderModifier(modifier) = filter {
            headers::modify(response.headers_mut(), modifier);
        }
    }
}
