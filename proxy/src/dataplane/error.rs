//! Why forwarding failed, and the one table (the "rescue") that turns a failure
//! into what the client sees: an HTTP status, or for gRPC a trailers-only response
//! with a gRPC status, plus the `error` label of `weft_request_errors_total`.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::metrics::ServiceMetrics;

use super::http::body::{BodyError, ProxyBody};

/// A request could not be forwarded. Each variant says where it happened; the
/// retry rule (DESIGN.md decision 8) only needs to know whether anything was sent,
/// which the forwarder tracks itself, and whose failure it was ([`Class::Client`]:
/// the downstream client's, which says nothing about the endpoint).
///
/// `Display` is for the proxy's own log and names upstream addresses; what the
/// client is told is [`ForwardError::public_message`], which never does.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no route for host {0:?}")]
    NoRoute(String),
    #[error("service has no healthy endpoint")]
    NoEndpoint,
    /// The service's port has routes and none of their rules matched the request
    /// (the Gateway API answers 404).
    #[error("no route rule matched the request")]
    NoRuleMatched,
    /// The matched rule has no backend to send to: every weight is 0, or its
    /// backend service is not in the mesh (the Gateway API answers 500).
    #[error("the route rule has no backend to send the request to")]
    NoBackend,
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
    Timeout(Duration),
    /// The upstream sent nothing for the response inactivity timeout while the
    /// response head was awaited (`--response-idle-timeout-ms`).
    #[error("upstream {addr} sent nothing for {after:?}")]
    ResponseIdle { addr: SocketAddr, after: Duration },
    /// Reading the request body from the downstream client failed (malformed
    /// chunked framing, a length that does not match, an upload cut off or reset):
    /// the client's failure, not the upstream's.
    #[error("request body from the client failed: {0}")]
    Client(BodyError),
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
    /// The downstream client failed its own request: no retry, and nothing learnt
    /// about the endpoint.
    Client = 9,
    /// The client stopped sending its request body: also the client's doing.
    BodyTimeout = 10,
    /// A route rule matched and has no backend.
    NoBackend = 11,
}

impl Class {
    pub const ALL: [Class; 12] = [
        Class::NoRoute,
        Class::NoEndpoint,
        Class::Connect,
        Class::ConnectTimeout,
        Class::Upstream,
        Class::Overflow,
        Class::Timeout,
        Class::Denied,
        Class::Unsupported,
        Class::Client,
        Class::BodyTimeout,
        Class::NoBackend,
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
            Class::Client => "client",
            Class::BodyTimeout => "body_timeout",
            Class::NoBackend => "no_backend",
        }
    }

    /// 404 for an unknown host (as Envoy and Linkerd answer), 502 when the service
    /// has nowhere to send the request or the upstream failed, 503 when a circuit
    /// breaker refused it, 504 when connecting or the request timed out, 403 when an
    /// authorization policy refused the caller, 501 for a request the proxy cannot
    /// forward as it came, 400 when the client's own request body failed, 408 for
    /// a client that stopped sending its body, 500 for a route rule without a
    /// backend (the Gateway API's answer; a route matching nothing is a 404 as an
    /// unknown host is).
    pub fn status(self) -> StatusCode {
        match self {
            Class::NoRoute => StatusCode::NOT_FOUND,
            Class::NoEndpoint | Class::Connect | Class::Upstream => StatusCode::BAD_GATEWAY,
            Class::Overflow => StatusCode::SERVICE_UNAVAILABLE,
            Class::ConnectTimeout | Class::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Class::Denied => StatusCode::FORBIDDEN,
            Class::Unsupported => StatusCode::NOT_IMPLEMENTED,
            Class::Client => StatusCode::BAD_REQUEST,
            Class::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Class::NoBackend => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// gRPC clients read `grpc-status`, not the HTTP status (which stays 200).
    /// A client whose request body failed has most likely cancelled its call
    /// (an HTTP/2 client resets its stream to do so).
    pub fn grpc_status(self) -> u16 {
        const CANCELLED: u16 = 1;
        const DEADLINE_EXCEEDED: u16 = 4;
        const UNIMPLEMENTED: u16 = 12;
        const UNAVAILABLE: u16 = 14;
        const PERMISSION_DENIED: u16 = 7;
        const INTERNAL: u16 = 13;
        match self {
            Class::NoRoute | Class::Unsupported => UNIMPLEMENTED,
            Class::Timeout => DEADLINE_EXCEEDED,
            Class::Denied => PERMISSION_DENIED,
            Class::Client => CANCELLED,
            Class::NoBackend => INTERNAL,
            _ => UNAVAILABLE,
        }
    }
}

impl ForwardError {
    pub fn class(&self) -> Class {
        match self {
            ForwardError::NoRoute(_) | ForwardError::NoRuleMatched => Class::NoRoute,
            ForwardError::NoBackend => Class::NoBackend,
            ForwardError::NoEndpoint => Class::NoEndpoint,
            ForwardError::Connect { .. }
            | ForwardError::Handshake { .. }
            | ForwardError::Http2Handshake { .. } => Class::Connect,
            ForwardError::ConnectTimeout { .. } => Class::ConnectTimeout,
            ForwardError::Upstream { .. }
            | ForwardError::Http1 { .. }
            | ForwardError::Http2 { .. } => Class::Upstream,
            ForwardError::Overflow(_) => Class::Overflow,
            ForwardError::Timeout(_) | ForwardError::ResponseIdle { .. } => Class::Timeout,
            ForwardError::Denied => Class::Denied,
            ForwardError::Unsupported(_) => Class::Unsupported,
            ForwardError::Client(_) => Class::Client,
            ForwardError::BodyTimeout(_) => Class::BodyTimeout,
        }
    }

    /// What the client is told (the response body, `weft-proxy-error`,
    /// `grpc-message`): the failure without the upstream's address, which stays
    /// in the proxy's log. A client learns that the upstream failed and how,
    /// not where the mesh's endpoints are.
    pub fn public_message(&self) -> String {
        match self {
            ForwardError::Connect { source, .. } => {
                format!("upstream connection failed: {source}")
            }
            ForwardError::ConnectTimeout { .. } => "upstream connect timed out".to_owned(),
            ForwardError::Handshake { source, .. } => {
                format!("upstream handshake failed: {source}")
            }
            ForwardError::Http2Handshake { source, .. } => {
                format!("upstream handshake failed: {source}")
            }
            ForwardError::Upstream { source, .. } => format!("upstream failed: {source}"),
            ForwardError::Http1 { source, .. } => format!("upstream failed: {source}"),
            ForwardError::Http2 { source, .. } => format!("upstream failed: {source}"),
            ForwardError::ResponseIdle { after, .. } => {
                format!("upstream sent nothing for {after:?}")
            }
            ForwardError::NoRoute(_)
            | ForwardError::NoRuleMatched
            | ForwardError::NoBackend
            | ForwardError::NoEndpoint
            | ForwardError::Overflow(_)
            | ForwardError::Timeout(_)
            | ForwardError::Denied
            | ForwardError::Unsupported(_)
            | ForwardError::Client(_)
            | ForwardError::BodyTimeout(_) => self.to_string(),
        }
    }
}

/// The response for a request that could not be forwarded, counted in `metrics`.
pub fn rescue(error: &ForwardError, metrics: &ServiceMetrics, grpc: bool) -> Response<ProxyBody> {
    let class = error.class();
    metrics.error(class as usize, class.label());
    tracing::debug!(service = metrics.service(), %error, "request failed");
    let message = error.public_message();
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

    #[tokio::test]
    async fn what_the_client_sees_names_no_upstream_address() {
        use http_body_util::BodyExt;
        let metrics = ServiceMetrics::new(crate::metrics::Direction::Outbound, "t/t".into());
        let addr: SocketAddr = "10.1.2.3:8080".parse().expect("address");
        let after = Duration::from_secs(300);
        for error in [
            ForwardError::Connect {
                addr,
                source: io::ErrorKind::ConnectionRefused.into(),
            },
            ForwardError::ConnectTimeout { addr },
            ForwardError::Http1 {
                addr,
                source: super::super::http::h1client::Error::Closed,
            },
            ForwardError::ResponseIdle { addr, after },
        ] {
            // The proxy's log keeps the address.
            assert!(error.to_string().contains("10.1.2.3:8080"), "{error}");
            let grpc = rescue(&error, &metrics, true);
            let message = &grpc.headers()["grpc-message"];
            assert!(!message.to_str().expect("ascii").contains("10.1.2.3"));
            let response = rescue(&error, &metrics, false);
            let header = response.headers()["weft-proxy-error"].clone();
            let body = response.into_body().collect().await.expect("body");
            for shown in [header.as_bytes(), &body.to_bytes()[..]] {
                let shown = String::from_utf8_lossy(shown);
                assert!(shown.starts_with("upstream "), "{shown}");
                assert!(
                    !shown.contains("10.1.2.3") && !shown.contains("8080"),
                    "{shown}"
                );
            }
        }
    }

    #[test]
    fn a_failed_request_body_is_the_clients_error() {
        let metrics = ServiceMetrics::new(crate::metrics::Direction::Outbound, "t/t".into());
        let error = ForwardError::Client(Box::new(io::Error::other("invalid chunk size")));
        assert_eq!(error.class(), Class::Client);
        let response = rescue(&error, &metrics, false);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let grpc = rescue(&error, &metrics, true);
        assert_eq!(grpc.headers()["grpc-status"], "1");
        let idle = ForwardError::ResponseIdle {
            addr: "10.1.2.3:8080".parse().expect("address"),
            after: Duration::from_secs(1),
        };
        assert_eq!(
            rescue(&idle, &metrics, false).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("50% off é"), "50%25 off %C3%A9");
    }
}
