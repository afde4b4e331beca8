//! HTTP on the data path: the downstream server side of a connection (HTTP/1 with
//! upgrades, or h2c), and per request the forwarder in [`forward`].
//!
//! A connection is served in the HTTP version the client speaks (HTTP/2 by
//! [`server`]; HTTP/1 by [`h1server`] until a request it leaves to hyper arrives,
//! then by hyper); each request is
//! forwarded in the version the destination declares (`http1`, or `http2`/`grpc`),
//! so the two sides may differ and [`headers`] translates between them.
//!
//! On every server path a request whose client stops sending its body is
//! abandoned after the request-body timeout ([`stall`]), and an HTTP/1 head
//! meets the same rules ([`headers::normalize_http1`]) and the same 64 KiB
//! bound, whichever server reads it.

mod attempt;
pub mod body;
pub mod client;
mod date;
mod debug;
pub(crate) mod filters;
mod forward;
pub mod h1client;
pub(crate) mod h1server;
pub mod headers;
mod idle;
pub(crate) mod routing;
mod server;
mod stall;
mod stream;

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONNECTION;
use http::{HeaderValue, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::drain;
use crate::metrics::ServiceMetrics;

use super::authz::Caller;
use super::destination::Destination;
use super::detect::Detected;
use super::io::Counted;
use super::Context;

use body::{ProxyBody, ReceivedBody};
pub use forward::Handler;
use stall::{Abandoned, BodyTimeout, StallTimer, Watched};

/// Where the requests of one connection go.
pub enum Route {
    /// Every request to one service port.
    Fixed(Arc<Destination>),
    /// Every request to the local app, each one authorized for `caller` first.
    Inbound {
        destination: Arc<Destination>,
        caller: Caller,
        /// The destination's handles for this caller's identity (its own when
        /// the caller is plaintext), resolved once per connection.
        metrics: Arc<ServiceMetrics>,
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
    // Closes a connection idle between requests, or as slow as that to send a
    // request head (an HTTP/1 connection with no exchange open, an HTTP/2 one with
    // no stream open): the service's idle timeout when the listener serves one
    // service, else the proxy's.
    let idle = match &route {
        Route::Fixed(destination) | Route::Inbound { destination, .. } => {
            destination.endpoints().policy.timeouts.idle
        }
        Route::ByHost { .. } => None,
    }
    .unwrap_or(cx.settings.downstream_idle_timeout);
    let timeouts = BodyTimeout::new(&cx, &route);
    let downstream = client.get_ref().addresses();
    let handler = Arc::new(Handler::new(cx, route, downstream));
    if detected == Detected::Http2 {
        return server::serve(client, handler, &timeouts, idle, &mut drain).await;
    }
    let rest = match h1server::serve(client, &handler, &timeouts, idle, &mut drain).await {
        h1server::Ended::Closed => return,
        h1server::Ended::Handover(rest) => rest,
    };
    serve_with_hyper(rest, handler, Arc::new(timeouts), idle, drain).await;
}

/// Serves the rest of an HTTP/1 connection with hyper: the requests
/// [`h1server`] leaves to it (bodies, upgrades, HTTP/1.0, malformed heads) and
/// every one after them.
async fn serve_with_hyper(
    client: h1server::Rewind,
    handler: Arc<Handler>,
    timeouts: Arc<BodyTimeout>,
    idle: Duration,
    mut drain: drain::Watch,
) {
    let activity = Arc::new(Activity::default());
    let watched = activity.clone();
    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let handler = handler.clone();
        let timeouts = timeouts.clone();
        let exchange = Exchange::begin(&activity);
        // Boxed once here: the request's state machine is a few KiB, and hyper
        // moves the service future into its dispatcher; moving a pointer instead
        // of the state showed as memcpy in profiles.
        Box::pin(async move {
            let response = serve_request(&handler, timeouts, request).await;
            Ok::<_, Infallible>(response.map(|(body, watch)| Tracked {
                body,
                watch,
                _exchange: exchange,
            }))
        })
    });
    let connection = hyper::server::conn::http1::Builder::new()
        // The idle timeout is `Activity::idle`'s, below.
        .header_read_timeout(None)
        // hyper's default (~400 KiB) let a slow partial head hold that much per
        // connection; the own server's bound applies here too (431 past it).
        .max_buf_size(h1server::MAX_HEAD)
        .serve_connection(TokioIo::new(client), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = watched.idle(idle) => {
            tracing::debug!("downstream connection idle; closing it");
            return;
        }
        () = drain.signaled_on_own_wake() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "downstream connection ended with an error");
    }
}

/// A response body for hyper, with the watch of its request's body while that
/// may still stall.
type Watch = Option<Box<(StallTimer, Arc<BodyTimeout>)>>;

/// One request on hyper's server: checked, forwarded, and abandoned (408 and a
/// close) if its body stalls before the response; after, the watch goes with
/// the response body ([`Tracked`]).
async fn serve_request(
    handler: &Handler,
    timeouts: Arc<BodyTimeout>,
    mut request: hyper::Request<hyper::body::Incoming>,
) -> Response<(ProxyBody, Watch)> {
    if let Err(malformed) = headers::normalize_http1(&mut request) {
        tracing::debug!(%malformed, "request refused");
        let mut response = Response::new((ProxyBody::empty(), None));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    let Some(stall) = timeouts.watch(&request) else {
        let response = handler.handle(request.map(ReceivedBody::Http1)).await;
        return response.map(|body| (body, None));
    };
    let request =
        request.map(|body| ReceivedBody::Http1Downstream(Watched::new(body, stall.clone())));
    let mut timer = timeouts.timer(&stall, false);
    let response = {
        let mut handled = pin!(handler.handle(request));
        poll_fn(|cx| {
            if let Poll::Ready(response) = handled.as_mut().poll(cx) {
                return Poll::Ready(Some(response));
            }
            timer.poll_stalled(cx).map(|()| None)
        })
        .await
    };
    match response {
        Some(response) => response.map(|body| (body, Some(Box::new((timer, timeouts))))),
        None => {
            let mut response = timeouts.abandon(&stall, false);
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            response.map(|body| (body, None))
        }
    }
}

/// The exchanges of one HTTP/1 connection, for its idle timeout: how many are
/// open (from the request head to the end of the response), and when the last
/// one ended. It stands in for hyper's header-read timeout, which armed a timer
/// (a clock reading, a boxed sleep, a timer-wheel entry) for every request; this
/// one is re-armed once per idle period. The connection is served on one task,
/// so relaxed atomics suffice (`Arc` only because hyper wants `Send` bodies).
#[derive(Default)]
struct Activity {
    open: AtomicUsize,
    /// [`crate::balance::now`] when the last exchange ended (0: none has).
    last_end: AtomicU64,
}

impl Activity {
    /// Resolves once no exchange has been open for `idle`: since the last one
    /// ended, or since the connection was accepted if none has. A client still
    /// sending a request head counts as idle, as hyper's header-read timeout did.
    async fn idle(&self, idle: Duration) {
        let accepted = Instant::now();
        let mut quiet_since = accepted;
        loop {
            let Some(deadline) = quiet_since.checked_add(idle) else {
                return std::future::pending().await;
            };
            tokio::time::sleep_until(deadline.into()).await;
            if self.open.load(Ordering::Relaxed) > 0 {
                quiet_since = Instant::now();
                continue;
            }
            quiet_since = match self.last_end.load(Ordering::Relaxed) {
                0 => accepted,
                ended => crate::balance::epoch() + Duration::from_nanos(ended),
            };
            if quiet_since.elapsed() >= idle {
                return;
            }
        }
    }
}

/// One request's exchange, open until its response body is dropped (sent, or
/// abandoned with the connection).
struct Exchange(Arc<Activity>);

impl Exchange {
    fn begin(activity: &Arc<Activity>) -> Exchange {
        activity.open.fetch_add(1, Ordering::Relaxed);
        Exchange(activity.clone())
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        // Never 0, which stands for "none ended yet".
        let now = crate::balance::now().max(1);
        self.0.last_end.store(now, Ordering::Relaxed);
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that holds its exchange open until it is dropped, and fails
/// (which closes the connection) if its request's body stalls meanwhile.
struct Tracked {
    body: body::ProxyBody,
    watch: Watch,
    _exchange: Exchange,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = body::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(watch) = &mut this.watch {
            let (timer, timeouts) = &mut **watch;
            if timer.poll_stalled(cx).is_ready() {
                timeouts.abandon_responding(timer.stall());
                this.watch = None;
                return Poll::Ready(Some(Err(Box::new(Abandoned::new()))));
            }
        }
        Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
