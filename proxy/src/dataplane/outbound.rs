//! Outbound: where a connection from the local application goes.
//!
//! - Captured (iptables redirected it; the original destination is known): a
//!   service's virtual IP and port selects that service port and its declared
//!   protocol. Any other destination is detected: HTTP is routed per request by
//!   Host/`:authority` to a service, or else forwarded to the original
//!   destination; anything else is passed through unchanged and counted.
//! - Not captured (a client dialled the outbound listener itself): HTTP routed by
//!   host name only; there is no original destination to fall back to.
//! - Explicit (`--upstream SERVICE[:PORT]=ADDR`): always that service port.

use std::io::ErrorKind;
use std::sync::Arc;

use tokio::net::TcpStream;
use weft_proto::model::Protocol;

use crate::config::Upstream;
use crate::drain;
use crate::metrics::{self, Direction};

use super::destination::Destination;
use super::detect::{detect, Detected};
use super::http::{self, Route};
use super::io::Counted;
use super::{tcp, Context};

pub async fn accept(cx: Arc<Context>, stream: TcpStream, drain: drain::Watch) {
    let original = match (cx.original_dst)(&stream) {
        // A connection made to the listener's own address was not redirected.
        Ok(dst) if crate::capture::is_own_address(&stream, dst) => None,
        Ok(dst) => Some(dst),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the original destination");
            return;
        }
    };
    let Some(original) = original else {
        return by_host_only(cx, stream, drain).await;
    };
    let destination = cx.registry.routes().by_virtual_address(&original).cloned();
    if let Some(destination) = destination {
        return to_destination(&cx, stream, &destination, drain).await;
    }
    // Not a virtual IP: route HTTP by host name, pass everything else through.
    let detected = detect(&stream, cx.settings.detect_timeout).await;
    let unknown = cx.registry.metrics(Direction::Outbound, "");
    let protocol = match detected {
        Detected::Opaque => {
            metrics::passthrough().increment(1);
            let fallback = Destination::fixed(Protocol::Tcp, unknown.clone(), original, 0);
            let client = Counted::new(stream, unknown);
            return tcp::proxy(&cx, client, &fallback, drain).await;
        }
        Detected::Http1 => Protocol::Http1,
        Detected::Http2 => Protocol::Http2,
    };
    let fallback = Destination::fixed(
        protocol,
        unknown.clone(),
        original,
        cx.settings.pool_max_idle,
    );
    let route = Route::ByHost {
        fallback: Some(fallback),
        default_port: Some(original.port()),
    };
    http::serve(
        cx.clone(),
        Counted::new(stream, unknown),
        route,
        detected,
        drain,
    )
    .await;
}

pub async fn accept_explicit(
    cx: Arc<Context>,
    upstream: Arc<Upstream>,
    stream: TcpStream,
    drain: drain::Watch,
) {
    let destination = cx
        .registry
        .routes()
        .by_service(&upstream.service_name(), upstream.port)
        .cloned();
    match destination {
        Some(destination) => to_destination(&cx, stream, &destination, drain).await,
        None => {
            // Without the service the protocol is unknown, so there is no way to
            // answer politely; closing tells the client at once.
            tracing::debug!(service = %upstream.service, "no such service (yet); closing");
            let metrics = cx
                .registry
                .metrics(Direction::Outbound, &upstream.service_name().to_string());
            let class = super::error::Class::NoRoute;
            metrics.error(class as usize, class.label());
        }
    }
}

/// Serves a connection bound for one known service port.
async fn to_destination(
    cx: &Arc<Context>,
    stream: TcpStream,
    destination: &Arc<Destination>,
    drain: drain::Watch,
) {
    if destination.protocol == Protocol::Tcp {
        let client = Counted::new(stream, destination.metrics.clone());
        return tcp::proxy(cx, client, destination, drain).await;
    }
    // A port declared HTTP/1 is served as such without a peek (one syscall less
    // per connection); HTTP/2 and gRPC ports also take HTTP/1 clients, so there
    // the first bytes decide.
    let detected = match destination.protocol {
        Protocol::Http1 => Detected::Http1,
        _ => detect(&stream, cx.settings.detect_timeout).await,
    };
    let client = Counted::new(stream, destination.metrics.clone());
    let route = Route::Fixed(destination.clone());
    http::serve(cx.clone(), client, route, detected, drain).await;
}

async fn by_host_only(cx: Arc<Context>, stream: TcpStream, drain: drain::Watch) {
    let detected = detect(&stream, cx.settings.detect_timeout).await;
    if detected == Detected::Opaque {
        tracing::debug!("uncaptured non-HTTP connection to the outbound listener; closing");
        return;
    }
    let unknown = cx.registry.metrics(Direction::Outbound, "");
    let route = Route::ByHost {
        fallback: None,
        default_port: None,
    };
    http::serve(
        cx.clone(),
        Counted::new(stream, unknown),
        route,
        detected,
        drain,
    )
    .await;
}
