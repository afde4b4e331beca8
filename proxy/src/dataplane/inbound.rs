//! Inbound: connections from other proxies (or any client) to the local app.
//!
//! The target is `--inbound-forward` when set, otherwise the port the client
//! dialled (the original destination under iptables) on 127.0.0.1. That port
//! decides the rest, by the local service that owns it ([`crate::local`]): the mTLS
//! mode, the protocol the mesh declares (undeclared ports are detected), the
//! `service` label of the metrics, and the authorization policies, checked with the
//! caller's identity from the handshake: per request for HTTP (so a policy change
//! applies to the next request on an open connection), once for a TCP connection.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use std::time::Duration;

use tokio::net::TcpStream;
use weft_proto::model::{MtlsMode, Protocol, SpiffeId};

use crate::metrics::Direction;
use crate::{drain, tls};

use super::authz::Caller;
use super::detect::{detect, Detected};
use super::http::{self, Route};
use super::io::{Conn, Counted};
use super::{tcp, Context};

pub async fn accept(cx: Arc<Context>, stream: TcpStream, drain: drain::Watch) {
    let Some(target) = target(&cx, &stream) else {
        tracing::debug!(
            "inbound connection with no original destination and no --inbound-forward; closing"
        );
        return;
    };
    let dialled = dialled_port(&cx, &stream);
    let (stream, identity) = match secure(&cx, stream, dialled).await {
        Ok(Some(secured)) => secured,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(error = %e, "inbound handshake failed");
            return;
        }
    };
    // The workload port the client dialled names the service port, as for
    // authorization: with --inbound-forward the app's own port is another one.
    let declared = cx.registry.local_protocol(dialled);
    let detected = match (&stream, declared) {
        (_, Some(Protocol::Tcp)) => Detected::Opaque,
        (Conn::Plain(plain), _) => detect(plain, cx.settings.detect_timeout).await,
        // Inside TLS the client said by ALPN what it speaks.
        (tls, _) => match alpn(tls) {
            Some(b"h2") => Detected::Http2,
            Some(b"http/1.1") => Detected::Http1,
            _ => Detected::Opaque,
        },
    };
    // The declaration wins: an h2c client of an HTTP/1 app is served h2 and
    // forwarded HTTP/1. Detection fills in undeclared ports.
    let protocol = declared.unwrap_or(match detected {
        Detected::Http1 => Protocol::Http1,
        Detected::Http2 => Protocol::Http2,
        Detected::Opaque => Protocol::Tcp,
    });
    let caller = Caller {
        identity,
        port: dialled,
    };
    // The server config requires a client certificate, so a TLS connection here
    // is one whose caller's certificate was verified: the `tls` metric label.
    let mtls = matches!(stream, Conn::Server(_));
    let destination = cx.registry.inbound(target, protocol, mtls, dialled);
    if protocol == Protocol::Tcp {
        // Closed before anything reaches the app; the client sees the connection end.
        if let Err(denied) = cx.registry.authorize(&caller) {
            tracing::debug!(policy = %denied.policy, caller = ?caller.identity, "TCP connection denied");
            return;
        }
        let client = Counted::new(stream, destination.metrics.clone());
        return tcp::proxy(&cx, client, &destination, drain).await;
    }
    let client = Counted::new(stream, destination.metrics.clone());
    let metrics = match &caller.identity {
        Some(identity) => {
            let peer =
                cx.registry
                    .peer(Direction::Inbound, destination.metrics.service(), identity);
            destination.metrics.for_peer(&peer).clone()
        }
        None => destination.metrics.clone(),
    };
    http::serve(
        cx.clone(),
        client,
        Route::Inbound {
            destination,
            caller,
            metrics,
        },
        detected,
        drain,
    )
    .await;
}

/// The port the client dialled: the workload port it found in the endpoints (the
/// original destination under iptables, else this listener's own port), which is
/// what a policy's port maps to, whatever port the app listens on.
fn dialled_port(cx: &Context, stream: &TcpStream) -> u16 {
    match (cx.original_dst)(stream) {
        Ok(dst) => dst.port(),
        Err(_) => stream.local_addr().map(|a| a.port()).unwrap_or(0),
    }
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

/// A client that stalls its handshake holds a task no longer than this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The first byte of a TLS record carrying a handshake (a ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;

/// Applies the mTLS mode of the local port the client dialled: the connection as the
/// app may see it and the client's verified identity (none in plaintext), or `None`
/// when the mode closes it.
async fn secure(
    cx: &Context,
    stream: TcpStream,
    dialled: u16,
) -> std::io::Result<Option<(Conn, Option<SpiffeId>)>> {
    let mode = cx.registry.local_mtls(dialled);
    let configs = cx.tls.current();
    let configs = match (mode, configs) {
        (MtlsMode::Disabled, _) | (MtlsMode::Permissive, None) => {
            return Ok(Some((Conn::Plain(stream), None)))
        }
        (MtlsMode::Strict, None) => {
            tracing::debug!("STRICT mTLS but no certificate yet; closing");
            return Ok(None);
        }
        (MtlsMode::Permissive, Some(configs)) => {
            if !starts_with_tls(&stream, cx.settings.detect_timeout).await {
                return Ok(Some((Conn::Plain(stream), None)));
            }
            configs
        }
        (MtlsMode::Strict, Some(configs)) => configs,
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(configs.server.clone());
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let stream = match handshake.await {
        Ok(stream) => stream?,
        Err(_) => return Err(ErrorKind::TimedOut.into()),
    };
    // The verifier accepted the chain; the identity is its leaf's URI SAN.
    let peer = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| tls::verify::peer_identity(leaf));
    let label = peer.as_ref().map(|id| id.to_string()).unwrap_or_default();
    metrics::counter!("weft_tls_connections_total", "direction" => "inbound", "peer_identity" => label)
        .increment(1);
    Ok(Some((Conn::Server(Box::new(stream)), peer)))
}

/// Whether the client's first byte opens a TLS handshake. A client that says
/// nothing within the detection timeout (a server-first protocol) is plaintext.
async fn starts_with_tls(stream: &TcpStream, timeout: Duration) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(timeout, stream.peek(&mut first)).await,
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE
    )
}

fn alpn(conn: &Conn) -> Option<&[u8]> {
    match conn {
        Conn::Server(tls) => tls.get_ref().1.alpn_protocol(),
        _ => None,
    }
}
