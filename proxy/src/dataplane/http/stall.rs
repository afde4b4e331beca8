//! The request-body timeout: a request whose client stops sending its body is
//! abandoned, so that it cannot hold its downstream connection, an upstream
//! connection and a `maxRequests` slot for ever.
//!
//! A streamed request body is [`Watched`]: it notes when it begins to wait for
//! the client (it was asked for a frame and had none) and when a frame comes.
//! The server polls a [`StallTimer`] beside the request, which fires once the
//! body has waited that long without a byte. As nginx's `client_body_timeout`,
//! this is the time between two reads, not the whole upload; and a body nobody
//! asks for (its upstream is slow to take it) is not waiting for the client.
//!
//! The server then drops the forwarding, which cancels the upstream request (an
//! HTTP/1 upstream connection is closed, not pooled; an HTTP/2 stream is reset;
//! the in-flight slot is freed), answers 408 if no response has begun, and
//! closes the connection (HTTP/1) or resets the stream (HTTP/2). A body already
//! piped by a task of its own (the rest of an upload to an HTTP/2 upstream whose
//! response head came first) fails once its request is abandoned, which resets
//! that upstream stream too.
//!
//! On HTTP/2 the timer fires only when the response did not move either: a gRPC
//! stream whose client sends nothing while its server streams stays up.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::task::AtomicWaker;
use http::Request;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::metrics::{Direction, ServiceMetrics};

use super::super::error::{rescue, ForwardError};
use super::super::Context as DataPath;
use super::body::{BodyError, ProxyBody};
use super::{headers, Route};

/// The body timeout of one connection's requests, and how to find the service a
/// stalled request was for (the forwarder, which knows, was dropped with it).
pub struct BodyTimeout {
    pub timeout: Duration,
    cx: Arc<DataPath>,
    service: Service,
}

enum Service {
    Known(Arc<ServiceMetrics>),
    ByHost {
        fallback: Option<Arc<ServiceMetrics>>,
        default_port: Option<u16>,
    },
}

impl BodyTimeout {
    pub fn new(cx: &Arc<DataPath>, route: &Route) -> BodyTimeout {
        let service = match route {
            Route::Fixed(destination) => Service::Known(destination.metrics.clone()),
            // The connection's handles: an abandoned request counts under its caller.
            Route::Inbound { metrics, .. } => Service::Known(metrics.clone()),
            Route::ByHost {
                fallback,
                default_port,
            } => Service::ByHost {
                fallback: fallback.as_ref().map(|d| d.metrics.clone()),
                default_port: *default_port,
            },
        };
        BodyTimeout {
            timeout: cx.settings.request_body_timeout,
            cx: cx.clone(),
            service,
        }
    }

    /// The watch of a request about to be forwarded; `None` when its body has
    /// already ended (most requests), which costs nothing more.
    pub fn watch<B: Body>(&self, request: &Request<B>) -> Option<Arc<Stall>> {
        if request.body().is_end_stream() {
            return None;
        }
        let authority = match self.service {
            Service::ByHost { .. } => headers::authority(request).map(Box::from),
            Service::Known(_) => None,
        };
        Some(Arc::new(Stall {
            waiting_since: AtomicU64::new(0),
            response_moved: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            server: AtomicWaker::new(),
            reader: AtomicWaker::new(),
            authority,
        }))
    }

    /// `both_ways`: the response moving keeps the request alive (HTTP/2).
    pub fn timer(&self, stall: &Arc<Stall>, both_ways: bool) -> StallTimer {
        StallTimer {
            stall: stall.clone(),
            timeout: self.timeout,
            both_ways,
            sleep: None,
        }
    }

    /// Abandons a request whose response had not begun: the 408 to send (a
    /// trailers-only response for gRPC), counted in its service's metrics.
    pub fn abandon(&self, stall: &Stall, grpc: bool) -> http::Response<ProxyBody> {
        stall.abandon();
        let metrics = self.metrics(stall.authority.as_deref());
        tracing::debug!(
            service = metrics.service(),
            "request body stalled; abandoned"
        );
        rescue(&ForwardError::BodyTimeout(self.timeout), &metrics, grpc)
    }

    /// Abandons a request whose response had begun (and is cut short), counted.
    pub fn abandon_responding(&self, stall: &Stall) {
        stall.abandon();
        let metrics = self.metrics(stall.authority.as_deref());
        tracing::debug!(
            service = metrics.service(),
            "request body stalled; abandoned"
        );
        let class = ForwardError::BodyTimeout(self.timeout).class();
        metrics.error(class as usize, class.label());
    }

    /// The response for a request abandoned before it was forwarded, counted
    /// (as a request too: the forwarder, which counts requests, never saw it).
    pub fn rescue(&self, authority: Option<&str>) -> http::Response<ProxyBody> {
        let metrics = self.metrics(authority);
        tracing::debug!(
            service = metrics.service(),
            "request body stalled; abandoned"
        );
        metrics.requests.increment(1);
        rescue(&ForwardError::BodyTimeout(self.timeout), &metrics, false)
    }

    /// The metrics of the service a request for `authority` goes to, as the
    /// forwarder finds it.
    fn metrics(&self, authority: Option<&str>) -> Arc<ServiceMetrics> {
        match &self.service {
            Service::Known(metrics) => metrics.clone(),
            Service::ByHost {
                fallback,
                default_port,
            } => {
                let routes = self.cx.registry.routes();
                routes
                    .by_authority(authority.unwrap_or(""), *default_port)
                    .map(|destination| destination.metrics.clone())
                    .or_else(|| fallback.clone())
                    .unwrap_or_else(|| self.cx.registry.metrics(Direction::Outbound, ""))
            }
        }
    }
}

/// What a watched request body and the server serving its request share.
pub struct Stall {
    /// [`crate::balance::now`] when the body began to wait for the client (never
    /// 0); 0 while it is not waiting.
    waiting_since: AtomicU64,
    /// When a response frame last went out (HTTP/2 only; 0: none yet).
    response_moved: AtomicU64,
    /// The body was read to its end (or failed): nothing left to time.
    ended: AtomicBool,
    /// The server gave up on the request: the body fails from now on.
    abandoned: AtomicBool,
    /// The server, woken when the body begins to wait (it arms its timer then).
    server: AtomicWaker,
    /// Whoever reads the body, woken when the request is abandoned.
    reader: AtomicWaker,
    /// The request's authority, on connections routed by host, to find its
    /// service's metrics.
    authority: Option<Box<str>>,
}

impl Stall {
    fn abandon(&self) {
        self.abandoned.store(true, Ordering::SeqCst);
        self.reader.wake();
    }

    /// Notes that a response frame went out.
    pub fn response_moved(&self) {
        if !self.ended.load(Ordering::Relaxed) {
            let now = crate::balance::now().max(1);
            self.response_moved.store(now, Ordering::Relaxed);
        }
    }
}

/// Why a watched body failed: its request was abandoned. Carries `CANCEL` as the reason an upstream stream
/// still carrying the body is reset with ([`super::stream`] looks for it).
#[derive(Debug, thiserror::Error)]
#[error("request abandoned: its body stalled")]
pub struct Abandoned(#[source] h2::Error);

impl Abandoned {
    pub fn new() -> Abandoned {
        Abandoned(h2::Error::from(h2::Reason::CANCEL))
    }
}

/// A downstream request body under the body timeout.
pub struct Watched<B> {
    inner: B,
    stall: Arc<Stall>,
}

impl<B> Watched<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    pub fn new(inner: B, stall: Arc<Stall>) -> Watched<B> {
        Watched { inner, stall }
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let stall = &*self.stall;
        if stall.abandoned.load(Ordering::SeqCst) {
            return Poll::Ready(Some(Err(Box::new(Abandoned::new()))));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Pending => {
                stall.reader.register(cx.waker());
                if stall.abandoned.load(Ordering::SeqCst) {
                    return Poll::Ready(Some(Err(Box::new(Abandoned::new()))));
                }
                if stall.waiting_since.load(Ordering::SeqCst) == 0 {
                    let now = crate::balance::now().max(1);
                    stall.waiting_since.store(now, Ordering::SeqCst);
                    stall.server.wake();
                }
            }
            Poll::Ready(Some(Ok(_))) => {
                stall.waiting_since.store(0, Ordering::SeqCst);
                if self.inner.is_end_stream() {
                    stall.ended.store(true, Ordering::Relaxed);
                }
            }
            Poll::Ready(_) => stall.ended.store(true, Ordering::Relaxed),
        }
        polled.map(|frame| frame.map(|result| result.map_err(Into::into)))
    }

    pub fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    pub fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The server's side of one request's watch.
pub struct StallTimer {
    stall: Arc<Stall>,
    timeout: Duration,
    both_ways: bool,
    /// Armed once the body first waits; boxed, as most requests never need it.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl StallTimer {
    pub fn stall(&self) -> &Stall {
        &self.stall
    }

    /// Ready once the body has waited for the client for the timeout (and, both
    /// ways, no response frame went out for as long).
    pub fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let stall = &*self.stall;
        if stall.ended.load(Ordering::Relaxed) {
            self.sleep = None;
            return Poll::Pending;
        }
        stall.server.register(cx.waker());
        let since = stall.waiting_since.load(Ordering::SeqCst);
        if since == 0 {
            return Poll::Pending;
        }
        let quiet = match self.both_ways {
            true => since.max(stall.response_moved.load(Ordering::Relaxed)),
            false => since,
        };
        let at = crate::balance::epoch() + Duration::from_nanos(quiet);
        let Some(deadline) = at.checked_add(self.timeout).map(Instant::from_std) else {
            return Poll::Pending;
        };
        super::idle::poll_until(&mut self.sleep, deadline, cx)
    }
}

/// A downstream HTTP/2 response body that notes its frames going out, so that a
/// stalled request body does not cut a response that is still moving.
pub struct Moving {
    pub body: ProxyBody,
    pub stall: Option<Arc<Stall>>,
}

impl Body for Moving {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(_))), Some(stall)) = (&polled, &this.stall) {
            stall.response_moved();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
