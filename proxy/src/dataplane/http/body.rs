//! The response body the proxy sends downstream: an upstream body streamed frame
//! by frame (never buffered), or a small body the proxy made itself.
//!
//! A body received from a peer (an upstream response, a downstream request)
//! comes from hyper's HTTP/1 side or from the `h2` crate ([`super::stream`]);
//! [`ReceivedBody`] carries either.
//!
//! Streaming through [`Observed`] is where a response ends, so it is where the
//! duration is recorded, a gRPC status is read from the trailers, and a pooled
//! HTTP/1 connection goes back to its pool (only once its response was read to the
//! end; a connection with unread bytes cannot carry the next request), and a
//! recorded request (tapped or access-logged, [`crate::record`]) is finished and a
//! sampled one's span ends ([`crate::trace`]).
//!
//! [`RequestBody`] is the other direction: a downstream body streamed as it comes,
//! for a request that may be retried also recorded as it goes (up to a bound), so
//! that a later attempt can send it again once it was read to its end.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::access_log::line::Flags;
use crate::metrics::ServiceMetrics;
use crate::record::Record;
use crate::trace::Span;

use super::filters::tee::Tee;
use super::h1client::ResponseBody;
use super::stall::Watched;
use super::stream::RecvBody;

/// A received body's failure, from either HTTP stack: boxed, as failures are
/// rare and what sends the body on only needs to know it failed (and, for a
/// reset, why: see [`super::stream`]).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// What polling one of the proxy's bodies (either direction) for a frame yields.
type PolledFrame = Poll<Option<Result<Frame<Bytes>, BodyError>>>;

pub struct ProxyBody(Kind);

enum Kind {
    Upstream(Observed),
    Full(Option<Bytes>),
}

impl ProxyBody {
    pub fn empty() -> ProxyBody {
        ProxyBody(Kind::Full(None))
    }

    pub fn full(bytes: Bytes) -> ProxyBody {
        ProxyBody(Kind::Full(Some(bytes).filter(|b| !b.is_empty())))
    }

    pub fn upstream(inner: ReceivedBody, completion: Completion) -> ProxyBody {
        ProxyBody(Kind::Upstream(Observed {
            inner,
            completion: Some(completion),
            grpc_status: None,
        }))
    }

    /// Finishes the recorded request when this body ends; a body the proxy made
    /// itself has ended already. `status`: the response's.
    pub fn record(&mut self, mut record: Box<Record>, status: u16) {
        match &mut self.0 {
            Kind::Upstream(Observed {
                completion: Some(completion),
                ..
            }) => completion.record = Some(record),
            Kind::Full(bytes) => {
                record.sent(bytes.as_ref().map_or(0, |b| b.len() as u64));
                record.finish(status, None)
            }
            Kind::Upstream(_) => record.finish(status, None),
        }
    }

    /// Ends a sampled request's span when this body ends; a body the proxy made
    /// itself has ended already. `status`: the response's.
    pub fn trace(&mut self, span: Box<Span>, status: u16) {
        match &mut self.0 {
            Kind::Upstream(Observed {
                completion: Some(completion),
                ..
            }) => completion.span = Some(span),
            _ => span.finish(status, None),
        }
    }
}

/// What to do when an upstream response ends.
pub struct Completion {
    pub metrics: Arc<ServiceMetrics>,
    pub started: Instant,
    pub status: u16,
    /// The response is gRPC and its status was not in the headers: it will be in
    /// the trailers, and the response is counted when they arrive.
    pub grpc_pending: bool,
    /// Only for a tapped or logged request: what to finish when the response ends.
    pub record: Option<Box<Record>>,
    /// Only for a sampled request: its span, to end when the response ends.
    pub span: Option<Box<Span>>,
}

/// A body as one of the HTTP stacks received it: hyper's HTTP/1 server (and its
/// client, for upgrades), the proxy's own HTTP/1.1 client, or `h2`.
pub enum ReceivedBody {
    /// A request that has no body (served by [`super::h1server`]).
    Empty,
    /// A small request body read whole (by [`super::h1server`]) before the
    /// request went on; `None` once it was polled.
    Whole(Option<Bytes>),
    Http1(Incoming),
    Http1Upstream(ResponseBody),
    Http2(RecvBody),
    /// A request body streamed from hyper's server, under the body timeout.
    Http1Downstream(Watched<Incoming>),
    /// A request body streamed from an HTTP/2 client, under the body timeout.
    Http2Downstream(Watched<RecvBody>),
    /// A request body copied for a mirror as it streams (see
    /// [`super::filters::tee`]).
    Teed(Box<Tee>),
    /// A logged request's body of undeclared length, its bytes counted for the
    /// access log line ([`crate::record`]).
    Measured(Box<Measured>),
}

/// A body and the count of its data bytes so far.
pub struct Measured {
    pub inner: ReceivedBody,
    pub bytes: Arc<AtomicU64>,
}

impl Body for ReceivedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> PolledFrame {
        match self.get_mut() {
            ReceivedBody::Empty => Poll::Ready(None),
            ReceivedBody::Whole(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ReceivedBody::Http1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ReceivedBody::Http1Upstream(body) => Pin::new(body).poll_frame(cx),
            ReceivedBody::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ReceivedBody::Http1Downstream(body) => body.poll_frame(cx),
            ReceivedBody::Http2Downstream(body) => body.poll_frame(cx),
            ReceivedBody::Teed(body) => body.poll_frame(cx),
            ReceivedBody::Measured(body) => {
                let polled = Pin::new(&mut body.inner).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &polled {
                    if let Some(data) = frame.data_ref() {
                        body.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReceivedBody::Empty => true,
            ReceivedBody::Whole(data) => data.is_none(),
            ReceivedBody::Http1(body) => body.is_end_stream(),
            ReceivedBody::Http1Upstream(body) => body.is_end_stream(),
            ReceivedBody::Http2(body) => body.is_end_stream(),
            ReceivedBody::Http1Downstream(body) => body.is_end_stream(),
            ReceivedBody::Http2Downstream(body) => body.is_end_stream(),
            ReceivedBody::Teed(body) => body.is_end_stream(),
            ReceivedBody::Measured(body) => body.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReceivedBody::Empty => SizeHint::with_exact(0),
            ReceivedBody::Whole(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ReceivedBody::Http1(body) => body.size_hint(),
            ReceivedBody::Http1Upstream(body) => body.size_hint(),
            ReceivedBody::Http2(body) => body.size_hint(),
            ReceivedBody::Http1Downstream(body) => body.size_hint(),
            ReceivedBody::Http2Downstream(body) => body.size_hint(),
            ReceivedBody::Teed(body) => body.size_hint(),
            ReceivedBody::Measured(body) => body.inner.size_hint(),
        }
    }
}

pub struct Observed {
    inner: ReceivedBody,
    completion: Option<Completion>,
    grpc_status: Option<u16>,
}

impl Observed {
    /// Counts a recorded response's body bytes (a branch for any other).
    fn count(&mut self, frame: &Frame<Bytes>) {
        let record = self.completion.as_mut().and_then(|c| c.record.as_mut());
        if let (Some(record), Some(data)) = (record, frame.data_ref()) {
            record.sent(data.len() as u64);
        }
    }

    /// `cut`: why the response ended before its end, when it did.
    fn finish(&mut self, cut: Option<Flags>) {
        let Some(completion) = self.completion.take() else {
            return;
        };
        completion
            .metrics
            .duration
            .record(completion.started.elapsed().as_secs_f64());
        if completion.grpc_pending {
            completion
                .metrics
                .response(completion.status, self.grpc_status);
        }
        if let Some(mut record) = completion.record {
            if let Some(cut) = cut {
                record.flag(cut);
            }
            record.finish(completion.status, self.grpc_status);
        }
        if let Some(span) = completion.span {
            span.finish(completion.status, self.grpc_status);
        }
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if self.completion.is_none() {
            return;
        }
        // Dropped before its end: the client went away (or its stream was reset).
        let cut = (!self.inner.is_end_stream()).then_some(Flags::DC);
        self.finish(cut);
    }
}

/// A request body on its way upstream.
pub enum RequestBody {
    Streaming(ReceivedBody),
    /// Streamed, and copied into the recording while it stays within its bound.
    Recorded(ReceivedBody, Arc<Recording>),
    /// A recorded body sent again.
    Buffered(Buffered),
}

/// What a [`RequestBody::Recorded`] body has carried so far. Written by the
/// attempt that streams the body, read by the forwarder when it decides on a retry.
#[derive(Debug)]
pub struct Recording {
    limit: usize,
    // A std Mutex: held to push a frame or take a copy, never across an await.
    state: std::sync::Mutex<Recorded>,
}

#[derive(Debug, Default)]
struct Recorded {
    data: Vec<Bytes>,
    size: usize,
    trailers: Option<HeaderMap>,
    complete: bool,
    overflowed: bool,
}

impl Recording {
    /// `complete`: the body is known to be empty (it will never be polled).
    pub fn new(limit: usize, complete: bool) -> Recording {
        Recording {
            limit,
            state: std::sync::Mutex::new(Recorded {
                complete,
                ..Recorded::default()
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, frame: &Frame<Bytes>) {
        let mut state = self.state();
        if state.overflowed {
            return;
        }
        if let Some(data) = frame.data_ref() {
            state.size += data.len();
            if state.size > self.limit {
                state.overflowed = true;
                state.data = Vec::new();
                return;
            }
            state.data.push(data.clone());
        } else if let Some(trailers) = frame.trailers_ref() {
            state.trailers = Some(trailers.clone());
        }
    }

    fn finish(&self) {
        self.state().complete = true;
    }

    /// Whether [`Recording::replay`] would give the body, without copying it.
    pub fn complete(&self) -> bool {
        let state = self.state();
        state.complete && !state.overflowed
    }

    /// The whole body, if it was read to its end within the bound.
    pub fn replay(&self) -> Option<Buffered> {
        let state = self.state();
        if !state.complete || state.overflowed {
            return None;
        }
        let data = match state.data.len() {
            0 => None,
            1 => Some(state.data[0].clone()),
            _ => Some(Bytes::from(state.data.concat())),
        };
        Some(Buffered {
            data,
            trailers: state.trailers.clone(),
        })
    }
}

#[derive(Clone, Default)]
pub struct Buffered {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Buffered {
    /// A body of `data` alone.
    pub fn whole(data: Bytes) -> Buffered {
        Buffered {
            data: Some(data).filter(|d| !d.is_empty()),
            trailers: None,
        }
    }
}

impl RequestBody {
    /// Takes the whole body when it is all in memory already (a small body the
    /// HTTP/1.1 server read whole, or one sent again without trailers), leaving
    /// it ended; a recording records it as if it had been polled.
    pub fn take_whole(&mut self) -> Option<Bytes> {
        match self {
            RequestBody::Streaming(ReceivedBody::Whole(data)) => data.take(),
            RequestBody::Recorded(ReceivedBody::Whole(data), recording) => {
                let data = data.take()?;
                recording.record(&Frame::data(data.clone()));
                recording.finish();
                Some(data)
            }
            RequestBody::Buffered(buffered) if buffered.trailers.is_none() => buffered.data.take(),
            _ => None,
        }
    }
}

#[cfg(test)]
impl Buffered {
    pub fn new(data: Bytes, trailers: Option<HeaderMap>) -> Buffered {
        Buffered {
            data: Some(data).filter(|d| !d.is_empty()),
            trailers,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> PolledFrame {
        match &mut *self {
            RequestBody::Streaming(inner) => Pin::new(inner).poll_frame(cx),
            RequestBody::Recorded(inner, recording) => {
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        recording.record(frame);
                        // Clients stop polling once the body says it ended, so the
                        // last frame is where a recording learns it is complete.
                        if inner.is_end_stream() {
                            recording.finish();
                        }
                    }
                    Poll::Ready(None) => recording.finish(),
                    _ => {}
                }
                polled
            }
            RequestBody::Buffered(buffered) => Poll::Ready(match buffered.data.take() {
                Some(data) => Some(Ok(Frame::data(data))),
                None => buffered.trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Streaming(inner) | RequestBody::Recorded(inner, _) => {
                inner.is_end_stream()
            }
            RequestBody::Buffered(b) => b.data.is_none() && b.trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Streaming(inner) | RequestBody::Recorded(inner, _) => inner.size_hint(),
            // With trailers the length is not the whole story: an HTTP/1.1
            // upstream gets the body chunked, so that the trailers go too.
            RequestBody::Buffered(b) => {
                let len = b.data.as_ref().map_or(0, |d| d.len() as u64);
                match b.trailers {
                    None => SizeHint::with_exact(len),
                    Some(_) => {
                        let mut hint = SizeHint::new();
                        hint.set_lower(len);
                        hint
                    }
                }
            }
        }
    }
}

/// The `grpc-status` of a trailers (or trailers-only headers) block.
pub fn grpc_status(headers: &HeaderMap) -> Option<u16> {
    const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
    headers
        .get(GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> PolledFrame {
        match &mut self.0 {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body) => {
                let polled = Pin::new(&mut body.inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(trailers) = frame.trailers_ref() {
                            body.grpc_status = grpc_status(trailers);
                        }
                        body.count(frame);
                    }
                    Poll::Ready(None) => body.finish(None),
                    Poll::Ready(Some(Err(_))) => body.finish(Some(Flags::UC)),
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream(body) => body.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Upstream(body) => body.inner.size_hint(),
        }
    }
}
