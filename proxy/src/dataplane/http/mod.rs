//! HTTP on the data path: the downstream server side of a connection (HTTP/1 with
//! upgrades, or h2c), and per request the forwarder in [`forward`].
//!
//! A connection is served in the HTTP version the client speaks (HTTP/2 by
//! [`server`], HTTP/1 by hyper); each request is
//! forwarded in the version the destination declares (`http1`, or `http2`/`grpc`),
//! so the two sides may differ and [`headers`] translates between them.

mod attempt;
pub mod body;
pub mod client;
mod date;
mod forward;
pub mod headers;
mod server;
mod stream;

use std::convert::Infallible;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::drain;

use super::authz::Caller;
use super::destination::Destination;
use super::detect::Detected;
use super::io::Counted;
use super::Context;

use body::ReceivedBody;
pub use forward::Handler;

/// Where the requests of one connection go.
pub enum Route {
    /// Every request to one service port.
    Fixed(Arc<Destination>),
    /// Every request to the local app, each one authorized for `caller` first.
    Inbound {
        destination: Arc<Destination>,
        caller: Caller,
    },
    /// Each request by its Host/`:authority`; a request for no known service goes
    /// to `fallback` (the original destination of a captured connection) or is
    /// answered 404 when there is none.
    ByHost {
        fallback: Option<Arc<Destination>>,
        /// The port the client dialled, to choose among a service's ports.
        default_port: Option<u16>,
    },
}

/// Serves one downstream connection until it closes or the drain signal (then
/// the current requests finish and the connection closes politely).
pub async fn serve(
    cx: Arc<Context>,
    client: Counted,
    route: Route,
    detected: Detected,
    mut drain: drain::Watch,
) {
    // Closes a keep-alive connection idle between requests (hyper's header-read
    // timeout runs from the moment it waits for the next request head; an HTTP/2
    // connection is idle with no stream open): the service's idle timeout when
    // the listener serves one service, else the proxy's.
    let idle = match &route {
        Route::Fixed(destination) | Route::Inbound { destination, .. } => {
            destination.endpoints().policy.timeouts.idle
        }
        Route::ByHost { .. } => None,
    }
    .unwrap_or(cx.settings.downstream_idle_timeout);
    let handler = Arc::new(Handler::new(cx, route));
    if detected == Detected::Http2 {
        return server::serve(client, handler, idle, &mut drain).await;
    }
    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let handler = handler.clone();
        // Boxed once here: the request's state machine is a few KiB, and hyper
        // moves the service future into its dispatcher; moving a pointer instead
        // of the state showed as memcpy in profiles.
        Box::pin(async move {
            let request = request.map(ReceivedBody::Http1);
            Ok::<_, Infallible>(handler.handle(request).await)
        })
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .serve_connection(TokioIo::new(client), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = drain.signaled_on_own_wake() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "downstream connection ended with an error");
    }
}
