//! One hop's span: the sampling decision as a request arrives ([`begin`]), what a
//! sampled request records on its way ([`Span`]), and the OTLP span it becomes when
//! its response ends ([`Span::finish`]).
//!
//! The decision: a caller that decided (`traceparent` flags, B3's sampled flag)
//! decides for this hop too; otherwise the service's share is drawn. A request
//! that is not sampled passes its headers on untouched and costs nothing more.
//! That includes one that arrived without any context: writing a `traceparent`
//! with the sampled flag off for it would spare the next hops their own draw, but
//! cost every request a header value, a header map that grows, and on HTTP/2 a
//! fresh HPACK literal (about 1,500 instructions, 6% of an HTTP/1.1 request, where
//! the goal for tracing at 1% is 3%). Only a sampled request builds a [`Span`]
//! (boxed, with its attributes), and it is the only one that allocates.
//!
//! Attributes follow OpenTelemetry's semantic conventions for HTTP and RPC spans;
//! `weft.*` ones say what the proxy did (direction, service, route, endpoint,
//! retries).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{Request, Version};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::context::{self, Format, Outgoing};
use super::export::Queue;
use super::Tracer;
use crate::metrics::ServiceMetrics;

/// Which side of the hop the proxy is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Outbound: the app's call leaving its proxy (a CLIENT span).
    Client,
    /// Inbound: a call arriving at the app's proxy (a SERVER span).
    Server,
}

/// A sampled request's span, until its response ends.
pub struct Span {
    queue: Arc<Queue>,
    side: Side,
    trace_id: u128,
    span_id: u64,
    /// Zero at a trace's root.
    parent_id: u64,
    start: SystemTime,
    started: Instant,
    name: String,
    attributes: Vec<KeyValue>,
    grpc: bool,
    /// A gRPC status the response headers carried (a trailers-only response).
    grpc_status: Option<u16>,
    endpoint: Option<SocketAddr>,
    retries: u32,
}

/// Decides whether this hop records a span, and writes the context the forwarded
/// request carries. `None`: nothing to record.
pub fn begin<B>(
    tracer: &Tracer,
    request: &mut Request<B>,
    side: Side,
    metrics: &ServiceMetrics,
    started: Instant,
    grpc: bool,
) -> Option<Box<Span>> {
    let headers = request.headers_mut();
    let incoming = context::read(headers);
    let sampled = match incoming.and_then(|c| c.sampled) {
        Some(decided) => decided,
        None => tracer.sampling.admits(rand::random()),
    };
    if !sampled {
        // The caller's "no", or no decision and the share said no: the headers
        // go on as they came.
        return None;
    }
    let span_id = non_zero(rand::random());
    let out = match incoming {
        Some(caller) if caller.has_ids() => Outgoing {
            format: caller.format,
            trace_id: caller.trace_id,
            short_trace_id: caller.short_trace_id,
            span_id,
            parent_id: caller.span_id,
            sampled,
        },
        // A bare B3 "yes": a new trace, in the caller's format.
        Some(caller) => Outgoing {
            format: caller.format,
            trace_id: non_zero(rand::random()),
            short_trace_id: false,
            span_id,
            parent_id: 0,
            sampled,
        },
        None => Outgoing {
            format: Format::W3c,
            trace_id: non_zero(rand::random()),
            short_trace_id: false,
            span_id,
            parent_id: 0,
            sampled,
        },
    };
    // No context read but a traceparent present: a broken one, replaced.
    let broken = incoming.is_none() && headers.contains_key(context::TRACEPARENT);
    context::write(headers, &out, broken);
    Some(Box::new(Span::new(
        tracer, request, side, metrics, started, grpc, &out,
    )))
}

fn non_zero<T: Default + PartialEq + From<u8>>(id: T) -> T {
    if id == T::default() {
        T::from(1)
    } else {
        id
    }
}

impl Span {
    #[cold]
    fn new<B>(
        tracer: &Tracer,
        request: &Request<B>,
        side: Side,
        metrics: &ServiceMetrics,
        started: Instant,
        grpc: bool,
        out: &Outgoing,
    ) -> Span {
        let method = request.method().as_str();
        let path = request.uri().path();
        let mut attributes = Vec::with_capacity(20);
        attributes.push(KeyValue::new("http.request.method", method.to_owned()));
        attributes.push(KeyValue::new("url.path", path.to_owned()));
        let scheme = request.uri().scheme_str().unwrap_or("http");
        attributes.push(KeyValue::new("url.scheme", scheme.to_owned()));
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| request.headers().get(http::header::HOST)?.to_str().ok());
        if let Some(authority) = authority.and_then(|a| a.parse::<http::uri::Authority>().ok()) {
            attributes.push(KeyValue::new("server.address", authority.host().to_owned()));
            let port = authority.port_u16().unwrap_or(match scheme {
                "https" => 443,
                _ => 80,
            });
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        let version = match request.version() {
            Version::HTTP_2 => "2",
            Version::HTTP_10 => "1.0",
            Version::HTTP_3 => "3",
            _ => "1.1",
        };
        attributes.push(KeyValue::new("network.protocol.version", version));
        let name = match grpc.then(|| rpc(path)).flatten() {
            Some((service, rpc_method)) => {
                attributes.push(KeyValue::new("rpc.system", "grpc"));
                attributes.push(KeyValue::new("rpc.service", service.to_owned()));
                attributes.push(KeyValue::new("rpc.method", rpc_method.to_owned()));
                format!("{service}/{rpc_method}")
            }
            // No route template is known (routes match, they do not template), so
            // the name is the method alone, as the conventions say then.
            None => method.to_owned(),
        };
        let direction = match side {
            Side::Client => "outbound",
            Side::Server => "inbound",
        };
        attributes.push(KeyValue::new("weft.direction", direction));
        attributes.push(KeyValue::new("weft.service", metrics.service().to_owned()));
        if !metrics.route().is_empty() {
            attributes.push(KeyValue::new("weft.route", metrics.route().to_owned()));
        }
        Span {
            queue: tracer.queue.clone(),
            side,
            trace_id: out.trace_id,
            span_id: out.span_id,
            parent_id: out.parent_id,
            start: SystemTime::now()
                .checked_sub(started.elapsed())
                .unwrap_or_else(SystemTime::now),
            started,
            name,
            attributes,
            grpc,
            grpc_status: None,
            endpoint: None,
            retries: 0,
        }
    }

    /// The attempt that ended the request: where it went, after how many retries.
    pub fn attempted(&mut self, endpoint: SocketAddr, retries: u32) {
        self.endpoint = Some(endpoint);
        self.retries = retries;
    }

    /// The gRPC status of the response headers (a trailers-only response).
    pub fn set_grpc_status(&mut self, status: Option<u16>) {
        self.grpc_status = status;
    }

    /// Ends the span and queues it for export. `grpc_status`: from the trailers.
    pub fn finish(self, status: u16, grpc_status: Option<u16>) {
        let Span {
            queue,
            side,
            trace_id,
            span_id,
            parent_id,
            start,
            started,
            name,
            mut attributes,
            grpc,
            grpc_status: in_headers,
            endpoint,
            retries,
        } = self;
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        let grpc_status = grpc_status.or(in_headers).filter(|_| grpc);
        if let Some(code) = grpc_status {
            attributes.push(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
        }
        if let Some(endpoint) = endpoint {
            attributes.push(KeyValue::new("weft.endpoint", endpoint.to_string()));
        }
        attributes.push(KeyValue::new("weft.retries", i64::from(retries)));
        let span = SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(trace_id.to_be_bytes()),
                SpanId::from_bytes(span_id.to_be_bytes()),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::from_bytes(parent_id.to_be_bytes()),
            parent_span_is_remote: parent_id != 0,
            span_kind: match side {
                Side::Client => SpanKind::Client,
                Side::Server => SpanKind::Server,
            },
            name: Cow::Owned(name),
            start_time: start,
            end_time: start + started.elapsed(),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: status_of(side, status, grpc_status),
            instrumentation_scope: queue.scope().clone(),
        };
        queue.push(span);
    }
}

/// `/package.Service/Method` to its service and method.
fn rpc(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// Error as the semantic conventions say: HTTP 5xx on either side and 4xx on the
/// client's; for gRPC, any status but OK on the client's side and the server's
/// own failures on the server's (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED,
/// INTERNAL, UNAVAILABLE, DATA_LOSS).
pub fn status_of(side: Side, status: u16, grpc_status: Option<u16>) -> Status {
    let failed = match (grpc_status, side) {
        (Some(code), Side::Client) => code != 0,
        (Some(code), Side::Server) => matches!(code, 2 | 4 | 12 | 13 | 14 | 15),
        (None, Side::Client) => status >= 400,
        (None, Side::Server) => status >= 500,
    } || status >= 500;
    match failed {
        true => Status::Error {
            description: Cow::Borrowed(""),
        },
        false => Status::Unset,
    }
}

#[cfg(test)]
mod tests;
