//! Opaque TCP: one balancing decision per connection, then bytes moved both ways
//! until both sides are done (spliced in the kernel, see [`super::splice`]).
//!
//! Half-close is kept: when one side finishes sending (EOF), the proxy shuts down
//! its write half towards the other and keeps copying the opposite direction, so
//! request/response protocols that signal "done" with a FIN still work.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::access_log::connection::{Closed, Connection};
use crate::access_log::line::Flags;
use crate::drain;
use crate::tls::{self, Alpn};

use super::destination::Destination;
use super::endpoint::{Endpoint, InFlight};
use super::error::ForwardError;
use super::io::{Conn, Counted};
use super::splice;
use super::Context;
use crate::resilience::breaker::{Limit, Permit};
use crate::resilience::failover::Feedback;

/// Per-direction buffer of the user-space copy (a TLS side cannot be spliced).
/// 64 KiB moves a bulk transfer in few syscalls; it lives only as long as its
/// connection.
const COPY_BUFFER: usize = 64 * 1024;

/// How many endpoints a connection tries before giving up (nothing was sent to
/// the ones that failed, so moving on is always safe).
const CONNECT_ATTEMPTS: usize = 3;

/// Connects to an endpoint, with the connect timeout.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ForwardError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(source)) => Err(ForwardError::Connect { addr, source }),
        Err(_) => Err(ForwardError::ConnectTimeout { addr }),
    }
}

/// Connects to an endpoint: TCP, then mTLS when the endpoint has an identity to
/// verify and this proxy holds a certificate. Without one the proxy cannot
/// authenticate itself, so it speaks plaintext (a PERMISSIVE peer accepts it, a
/// STRICT one closes it). A failed handshake sent no payload: it counts as a
/// connect failure, so the caller moves on to another endpoint.
pub async fn connect_endpoint(
    cx: &Context,
    endpoint: &Endpoint,
    alpn: Alpn,
) -> Result<Conn, ForwardError> {
    let addr = endpoint.address;
    let timeout = endpoint.connect_timeout();
    let stream = connect(addr, timeout).await?;
    let (Some(expected), Some(configs)) = (endpoint.tls.as_ref(), cx.tls.current()) else {
        return Ok(Conn::Plain(stream));
    };
    let config = configs
        .client(expected, alpn)
        .map_err(|e| ForwardError::Connect {
            addr,
            source: std::io::Error::other(e),
        })?;
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout(timeout, connector.connect(tls::server_name(), stream)).await {
        Ok(Ok(stream)) => {
            if let Some(counter) = &endpoint.tls_connections {
                counter.increment(1);
            }
            Ok(Conn::Client(Box::new(stream)))
        }
        Ok(Err(source)) => Err(ForwardError::Connect { addr, source }),
        Err(_) => Err(ForwardError::ConnectTimeout { addr }),
    }
}

/// Proxies one accepted connection to one endpoint of `destination`, and writes
/// its access log line at the close when the service's share draws it.
pub async fn proxy(cx: &Context, client: Counted, destination: &Destination, drain: drain::Watch) {
    if !destination.logs_one() {
        let _ = forward(cx, client, destination, drain).await;
        return;
    }
    let logged = Connection::new(client.get_ref().addresses());
    let closed = forward(cx, client, destination, drain).await;
    logged.finish(&cx.shared.access_log, &destination.metrics, closed);
}

async fn forward(
    cx: &Context,
    mut client: Counted,
    destination: &Destination,
    mut drain: drain::Watch,
) -> Closed {
    let Upstream {
        conn: mut upstream,
        in_flight,
        permit: _permit,
    } = match connect_balanced(cx, destination).await {
        Ok(connected) => connected,
        Err(e) => {
            let class = e.class();
            destination.metrics.error(class as usize, class.label());
            tracing::debug!(service = destination.metrics.service(), error = %e, "tcp connect failed");
            return Closed {
                upstream: None,
                flags: Flags::of(class),
                received: 0,
                sent: 0,
            };
        }
    };
    let grace = cx.settings.drain_grace;
    let draining = async {
        drain.signaled().await;
        tokio::time::sleep(grace).await;
    };
    // Splicing moves raw bytes, so only when neither side is TLS.
    let result = match client.get_ref().plain().zip(upstream.plain()) {
        Some((downstream, upstream)) => {
            let (mut received, mut sent) = (0, 0);
            let copied = splice::copy_bidirectional(downstream, upstream, &mut received, &mut sent);
            let result = tokio::select! {
                result = copied => result,
                () = draining => Ok(()),
            };
            client.add(received, sent);
            result
        }
        None => {
            let copied = tokio::io::copy_bidirectional_with_sizes(
                &mut client,
                &mut upstream,
                COPY_BUFFER,
                COPY_BUFFER,
            );
            tokio::select! {
                result = copied => result.map(|_| ()),
                () = draining => Ok(()),
            }
        }
    };
    let mut flags = Flags::default();
    if let Err(e) = result {
        tracing::debug!(error = %e, "tcp connection ended with an error");
        flags = Flags::UC;
    }
    let (received, sent) = client.counts();
    Closed {
        upstream: Some(in_flight.endpoint().address),
        flags,
        received,
        sent,
    }
}

/// An upstream connection for one downstream connection, with what it holds: its
/// endpoint's in-flight count and its place under the destination's connection
/// limit, both released when it is dropped.
pub struct Upstream {
    pub conn: Conn,
    pub in_flight: InFlight,
    pub permit: Option<Permit>,
}

/// Picks an endpoint and connects, moving on to another endpoint when connecting
/// fails. The service's settings apply as on the HTTP path: its connection limit
/// (beyond it the connection is refused at once), its locality preference, outlier
/// ejection (ejected endpoints are avoided), its connect timeout, and the
/// failover rule's fail-fast: an endpoint whose connect fails leaves rotation at
/// once until a probe reaches it again.
pub async fn connect_balanced(
    cx: &Context,
    destination: &Destination,
) -> Result<Upstream, ForwardError> {
    let set = destination.endpoints_full();
    let permit = match set.policy.circuit_breakers.max_connections {
        u32::MAX => None,
        max => Some(
            destination
                .breakers
                .admit(Limit::Connections, max)
                .ok_or_else(|| destination.overflow(Limit::Connections))?,
        ),
    };
    let mut failed = Vec::new();
    let mut last_error = ForwardError::NoEndpoint;
    for _ in 0..CONNECT_ATTEMPTS {
        let Some((index, endpoint)) = destination.pick(&set, &failed) else {
            break;
        };
        failed.push(index);
        let in_flight = InFlight::begin(endpoint, set.picker.uses_latency());
        let connected = connect_endpoint(cx, in_flight.endpoint(), Alpn::None).await;
        let feedback = match connected {
            Ok(_) => Feedback::Success,
            Err(_) => Feedback::Unreachable,
        };
        destination.feedback(&set, &in_flight, feedback, crate::balance::now());
        match connected {
            Ok(conn) => {
                return Ok(Upstream {
                    conn,
                    in_flight,
                    permit,
                })
            }
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}
