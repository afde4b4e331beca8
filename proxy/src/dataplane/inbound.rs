//! Inbound: connections from other proxies (or any client) to the local app.
//!
//! The target is `--inbound-forward` when set, otherwise the port the client
//! dialled (the original destination under iptables) on 127.0.0.1. The protocol is
//! the one the mesh declares for that port of the local service; undeclared ports
//! are detected.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpStream;
use weft_proto::model::Protocol;

use crate::drain;

use super::detect::{detect, Detected};
use super::http::{self, Route};
use super::io::Counted;
use super::{tcp, Context};

pub async fn accept(cx: Arc<Context>, stream: TcpStream, drain: drain::Watch) {
    let Some(target) = target(&cx, &stream) else {
        tracing::debug!(
            "inbound connection with no original destination and no --inbound-forward; closing"
        );
        return;
    };
    let stream = match secure(stream).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(error = %e, "inbound handshake failed");
            return;
        }
    };
    let declared = cx.registry.local_protocol(target.port());
    let detected = match declared {
        Some(Protocol::Tcp) => Detected::Opaque,
        _ => detect(&stream, cx.settings.detect_timeout).await,
    };
    // The declaration wins: an h2c client of an HTTP/1 app is served h2 and
    // forwarded HTTP/1. Detection fills in undeclared ports.
    let protocol = declared.unwrap_or(match detected {
        Detected::Http1 => Protocol::Http1,
        Detected::Http2 => Protocol::Http2,
        Detected::Opaque => Protocol::Tcp,
    });
    let destination = cx.registry.inbound(target, protocol);
    let client = Counted::new(stream, destination.metrics.clone());
    if protocol == Protocol::Tcp {
        return tcp::proxy(&cx, client, &destination, drain).await;
    }
    http::serve(
        cx.clone(),
        client,
        Route::Fixed(destination),
        detected,
        drain,
    )
    .await;
}

fn target(cx: &Context, stream: &TcpStream) -> Option<SocketAddr> {
    if let Some(forward) = cx.shared.config.inbound_forward {
        return Some(forward);
    }
    match (cx.original_dst)(stream) {
        Ok(dst) if !crate::capture::is_own_address(stream, dst) => {
            Some(SocketAddr::from((Ipv4Addr::LOCALHOST, dst.port())))
        }
        Ok(_) => None,
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the original destination");
            None
        }
    }
}

/// The seam for mTLS: today inbound is plaintext and this returns the stream as
/// is; the TLS issue replaces it with a handshake that yields the peer identity.
async fn secure(stream: TcpStream) -> std::io::Result<TcpStream> {
    Ok(stream)
}
