//! Opaque TCP: one balancing decision per connection, then bytes moved both ways
//! until both sides are done (spliced in the kernel, see [`super::splice`]).
//!
//! Half-close is kept: when one side finishes sending (EOF), the proxy shuts down
//! its write half towards the other and keeps copying the opposite direction, so
//! request/response protocols that signal "done" with a FIN still work.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::drain;

use super::destination::Destination;
use super::endpoint::InFlight;
use super::error::ForwardError;
use super::io::Counted;
use super::splice::Pipes;
use super::Context;

/// Per-direction buffer of the user-space fallback copy. 64 KiB moves a bulk
/// transfer in few syscalls; it lives only as long as its connection.
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

/// Proxies one accepted connection to one endpoint of `destination`.
pub async fn proxy(
    cx: &Context,
    mut client: Counted,
    destination: &Destination,
    mut drain: drain::Watch,
) {
    let (mut upstream, _in_flight) = match connect_balanced(cx, destination).await {
        Ok(connected) => connected,
        Err(e) => {
            let class = e.class();
            destination.metrics.error(class as usize, class.label());
            tracing::debug!(service = destination.metrics.service(), error = %e, "tcp connect failed");
            return;
        }
    };
    let grace = cx.settings.drain_grace;
    let draining = async {
        drain.signaled().await;
        tokio::time::sleep(grace).await;
    };
    let result = match Pipes::new() {
        Ok(pipes) => {
            let (mut received, mut sent) = (0, 0);
            let copied =
                pipes.copy_bidirectional(client.get_ref(), &upstream, &mut received, &mut sent);
            let result = tokio::select! {
                result = copied => result,
                () = draining => Ok(()),
            };
            client.add(received, sent);
            result
        }
        Err(e) => {
            tracing::debug!(error = %e, "no pipes for splice; copying through user space");
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
    if let Err(e) = result {
        tracing::debug!(error = %e, "tcp connection ended with an error");
    }
}

/// Picks an endpoint and connects, moving on to another endpoint when connecting
/// fails. The returned guard counts the connection as in flight on the endpoint.
pub async fn connect_balanced(
    cx: &Context,
    destination: &Destination,
) -> Result<(TcpStream, InFlight), ForwardError> {
    let mut failed = Vec::new();
    let mut last_error = ForwardError::NoEndpoint;
    for _ in 0..CONNECT_ATTEMPTS {
        let endpoint = {
            let set = destination.endpoints();
            let picked = set.picker.pick(
                &set.endpoints,
                &failed,
                crate::balance::now(),
                &mut rand::rng(),
            );
            match picked {
                Some(i) => {
                    failed.push(i);
                    set.endpoints[i].clone()
                }
                None => return Err(ForwardError::NoEndpoint),
            }
        };
        let in_flight = InFlight::begin(endpoint);
        match connect(in_flight.endpoint().address, cx.settings.connect_timeout).await {
            Ok(stream) => {
                in_flight.observe();
                return Ok((stream, in_flight));
            }
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}
