//! Why forwarding failed, and the one table (the "rescue") that turns a failure
//! into what the client sees: an HTTP status, or for gRPC a trailers-only response
//! with a gRPC status, plus the `error` label of `weft_request_errors_total`.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::metrics::ServiceMetrics;

use super::http::body::ProxyBody;

/// A request could not be forwarded. Each variant says where it happened; the
/// retry rule (DESIGN.md decision 8) only needs to know whether anything was sent,
/// which the forwarder tracks itself.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no route for host {0:?}")]
    NoRoute(String),
    #[error("service has no healthy endpoint")]
    NoEndpoint,
    #[error("connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("connect to {addr} timed out")]
    ConnectTimeout { addr: SocketAddr },
    #[error("HTTP handshake with {addr}: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("upstream {addr}: {source}")]
    Upstream {
        addr: SocketAddr,
        source: hyper::Error,
    },
    /// A request to an HTTP/1.1 upstream or its response failed (the proxy's own
    /// HTTP/1.1 client, [`super::http::h1client`]).
    #[error("upstream {addr}: {source}")]
    Http1 {
        addr: SocketAddr,
        source: super::http::h1client::Error,
    },
    #[error("HTTP/2 handshake with {addr}: {source}")]
    Http2Handshake { addr: SocketAddr, source: h2::Error },
    /// An HTTP/2 stream or its connection failed (the proxy's own HTTP/2 client,
    /// [`super::http::stream`]).
    #[error("upstream {addr}: {source}")]
    Http2 { addr: SocketAddr, source: h2::Error },
    /// A circuit breaker is open: the request was refused without being sent.
    #[error("circuit breaker open: too many {0}")]
    Overflow(&'static str),
    /// The request (or, with no retry left, its last attempt) ran out of time
    /// before the response headers.
    #[error("request timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The caller's identity is not allowed by the local service's policies. The
    /// message does not name the policy: the caller learns it was refused, the
    /// operator reads which policy refused it in the metrics and the debug log.
    #[error("the caller's identity is not authorized for this service")]
    Denied,
    /// A request the proxy cannot forward as it came (a CONNECT to an `http1`
    /// service from a client that is not HTTP/1.1).
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// The client sent no request body bytes for the request-body timeout: the
    /// request was abandoned (the client's doing, not the upstream's).
    #[error("no request body bytes from the client for {0:?}")]
    BodyTimeout(std::time::Duration),
}

/// The classes the rescue table knows; the discriminant is the metric slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    NoRoute = 0,
    NoEndpoint = 1,
    Connect = 2,
    ConnectTimeout = 3,
    Upstream = 4,
    Overflow = 5,
    Timeout = 6,
    Denied = 7,
    Unsupported = 8,
    BodyTimeout = 9,
}

impl Class {
    pub const ALL: [Class; 10] = [
        Class::NoRoute,
        Class::NoEndpoint,
        Class::Connect,
        Class::ConnectTimeout,
        Class::Upstream,
        Class::Overflow,
        Class::Timeout,
        Class::Denied,
        Class::Unsupported,
        Class::BodyTimeout,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Class::NoRoute => "no_route",
            Class::NoEndpoint => "no_endpoint",
            Class::Connect => "connect",
            Class::ConnectTimeout => "connect_timeout",
            Class::Upstream => "upstream",
            Class::Overflow => "overflow",
            Class::Timeout => "timeout",
            Class::Denied => "denied",
            Class::Unsupported => "unsupported",
            Class::BodyTimeout => "body_timeout",
        }
    }

    /// 404 for an unknown host (as Envoy and Linkerd answer), 502 when the service
    /// has nowhere to send the request or the upstream failed, 503 when a circuit
    /// breaker refused it, 504 when connecting or the request timed out, 403 when an
    /// authorization policy refused the caller, 501 for a request the proxy cannot
    /// forward as it came, 408 for a client that stopped sending its body.
    pub fn status(self) -> StatusCode {
        match self {
            Class::NoRoute => StatusCode::NOT_FOUND,
            Class::NoEndpoint | Class::Connect | Class::Upstream => StatusCode::BAD_GATEWAY,
            Class::Overflow => StatusCode::SERVICE_UNAVAILABLE,
            Class::ConnectTimeout | Class::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Class::Denied => StatusCode::FORBIDDEN,
            Class::Unsupported => StatusCode::NOT_IMPLEMENTED,
            Class::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// gRPC clients read `grpc-status`, not the HTTP status (which stays 200).
    pub fn grpc_status(self) -> u16 {
        const DEADLINE_EXCEEDED: u16 = 4;
        const UNIMPLEMENTED: u16 = 12;
        const UNAVAILABLE: u16 = 14;
        const PERMISSION_DENIED: u16 = 7;
        match self {
            Class::NoRoute | Class::Unsupported => UNIMPLEMENTED,
            Class::Timeout => DEADLINE_EXCEEDED,
            Class::Denied => PERMISSION_DENIED,
            _ => UNAVAILABLE,
        }
    }
}

impl ForwardError {
    pub fn class(&self) -> Class {
        match self {
            ForwardError::NoRoute(_) => Class::NoRoute,
            ForwardError::NoEndpoint => Class::NoEndpoint,
            ForwardError::Connect { .. }
            | ForwardError::Handshake { .. }
            | ForwardError::Http2Handshake { .. } => Class::Connect,
            ForwardError::ConnectTimeout { .. } => Class::ConnectTimeout,
            ForwardError::Upstream { .. }
            | ForwardError::Http1 { .. }
            | ForwardError::Http2 { .. } => Class::Upstream,
            ForwardError::Overflow(_) => Class::Overflow,
            ForwardError::Timeout(_) => Class::Timeout,
            ForwardError::Denied => Class::Denied,
            ForwardError::Unsupported(_) => Class::Unsupported,
            ForwardError::BodyTimeout(_) => Class::BodyTimeout,
        }
    }
}

/// The response for a request that could not be forwarded, counted in `metrics`.
pub fn rescue(error: &ForwardError, metrics: &ServiceMetrics, grpc: bool) -> Response<ProxyBody> {
    let class = error.class();
    metrics.error(class as usize, class.label());
    let message = error.to_string();
    tracing::debug!(service = metrics.service(), error = %message, "request failed");
    let mut response = Response::new(if grpc {
        ProxyBody::empty()
    } else {
        ProxyBody::full(Bytes::from(format!("{message}\n")))
    });
    if !grpc {
        *response.status_mut() = class.status();
    }
    let headers = response.headers_mut();
    // The header tells an operator the proxy answered, not the application.
    if let Ok(value) = HeaderValue::from_str(&message) {
        headers.insert("weft-proxy-error", value);
    }
    if grpc {
        let code = class.grpc_status();
        metrics.response(200, Some(code));
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from(code));
        if let Ok(value) = HeaderValue::from_str(&percent_encode(&message)) {
            headers.insert("grpc-message", value);
        }
    } else {
        metrics.response(class.status().as_u16(), None);
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    response
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2 spec): everything outside
/// printable ASCII, and `%` itself.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_a_metric_slot() {
        for class in Class::ALL {
            assert!((class as usize) < crate::metrics::ERROR_SLOTS, "{class:?}");
        }
    }

    #[test]
    fn grpc_failures_are_trailers_only_with_a_status() {
        let metrics = ServiceMetrics::new(crate::metrics::Direction::Outbound, "t/t".into());
        let error = ForwardError::NoEndpoint;
        let response = rescue(&error, &metrics, true);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "14");
        let response = rescue(&error, &metrics, false);
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        let denied = rescue(&ForwardError::Denied, &metrics, true);
        assert_eq!(denied.headers()["grpc-status"], "7");
        let denied = rescue(&ForwardError::Denied, &metrics, false);
        assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("50% off é"), "50%25 off %C3%A9");
    }
}
