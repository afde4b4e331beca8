//! One request on the shared upstream HTTP/2 connection, driven by the request's
//! own future: no task per request, unlike hyper's client (which hands each
//! request to its connection task through a channel, spawns a task that waits for
//! the stream to open, and answers through a oneshot).
//!
//! The request head goes out at once; a request body is piped into its stream
//! alongside the wait for the response head, within the stream's flow-control
//! window. Only when the response head arrives before the request body ended (a
//! gRPC bidirectional stream, an early answer to an upload) does the rest of the
//! body move to a task of its own, since the request's future ends with the head.
//! Dropping the future before then drops the stream's handles, which resets the
//! stream (`RST_STREAM CANCEL`), as does a downstream body that fails: that is
//! the client's failure ([`Refusal::Client`]), not the upstream's. The wait for
//! the head, and for each frame of the response body, is bounded by the response
//! inactivity timeout ([`IdleTimer`]); when it runs out the stream is reset.
//!
//! [`RecvBody`] is the response body: the stream's data frames, then its
//! trailers, with the window given back as each frame is handed on.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{Reason, RecvStream, SendStream};
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Method, Request, Response};
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::body::{BodyError, RequestBody};
use super::idle::{Idle, IdleTimer};

/// A request the upstream did not take: whether it came back unsent.
pub enum Refusal {
    /// The connection could not open a stream; the request is intact (boxed, as
    /// for [`super::attempt::Failure`]: rare, and the request is large).
    Unsent(Box<Request<RequestBody>>, h2::Error),
    /// The stream was opened (the upstream may have seen the request) and failed.
    Sent(h2::Error),
    /// The request body from the downstream client failed; the stream was reset.
    Client(BodyError),
    /// The upstream sent nothing for this long; the stream was reset.
    Idle(Duration),
}

/// Sends `request` on a stream of `sender`'s connection and waits for the
/// response head, at most `idle` at a time with nothing moving (zero: no limit).
pub async fn exchange(
    sender: SendRequest<Bytes>,
    request: Request<RequestBody>,
    idle: Duration,
) -> Result<Response<RecvBody>, Refusal> {
    let mut sender = match sender.ready().await {
        Ok(sender) => sender,
        Err(error) => return Err(Refusal::Unsent(Box::new(request), error)),
    };
    let (mut head, body) = request.into_parts();
    // As hyper does: a body whose length is known announces it, so the upstream
    // need not wait for the end of the stream to learn it.
    if let Some(length) = body.size_hint().exact() {
        if length != 0 || has_payload_semantics(&head.method) {
            head.headers
                .entry(CONTENT_LENGTH)
                .or_insert_with(|| HeaderValue::from(length));
        }
    }
    let ended = body.is_end_stream();
    let (response, stream) = sender
        .send_request(Request::from_parts(head, ()), ended)
        .map_err(Refusal::Sent)?;
    let pipe = (!ended).then(|| Pipe::new(body, stream));
    let mut timer = IdleTimer::new(idle);
    let (response, upload) = await_head(response, pipe, &mut timer).await?;
    timer.progress();
    Ok(response.map(|stream| RecvBody::upstream(stream, timer, upload)))
}

/// Waits for the response head while piping the request body; a body still
/// streaming when the head arrives goes on in a task of its own. The wait is
/// the upstream's (and timed) only while the body is not waiting for its
/// client.
async fn await_head(
    mut response: ResponseFuture,
    mut pipe: Option<Pipe<RequestBody>>,
    timer: &mut IdleTimer,
) -> Result<(Response<RecvStream>, Option<Arc<Upload>>), Refusal> {
    let head = poll_fn(|cx| {
        let mut awaiting_client = false;
        if let Some(piping) = pipe.as_mut() {
            let sent = piping.poll_send(cx).is_ready();
            if let Some(error) = piping.failure.take() {
                return Poll::Ready(Err(Refusal::Client(error)));
            }
            if std::mem::take(&mut piping.moved) {
                timer.progress();
            }
            awaiting_client = piping.awaiting_body;
            if sent {
                pipe = None;
            }
        }
        if let Poll::Ready(head) = Pin::new(&mut response).poll(cx) {
            return Poll::Ready(head.map_err(Refusal::Sent));
        }
        if awaiting_client {
            timer.progress();
        }
        timer
            .poll_expired(cx)
            .map(|after| Err(Refusal::Idle(after)))
    })
    .await?;
    let Some(mut pipe) = pipe else {
        return Ok((head, None));
    };
    let upload = Arc::new(Upload::default());
    let seen = upload.clone();
    tokio::spawn(async move {
        poll_fn(|cx| {
            let sent = pipe.poll_send(cx);
            seen.record(&mut pipe, sent.is_ready());
            sent
        })
        .await
    });
    Ok((head, Some(upload)))
}

/// How a request body sent on by a task of its own is doing, for its response
/// body's inactivity timer: as long as the request moves, or waits for its
/// client, the exchange is not idle (a gRPC client stream that sends now and
/// then while the upstream is silent until the end).
#[derive(Default)]
struct Upload {
    /// When data last went upstream, in nanoseconds since `base`.
    moved_at: AtomicU64,
    base: OnceLock<Instant>,
    awaiting_client: AtomicBool,
}

impl Upload {
    fn record(&self, pipe: &mut Pipe<RequestBody>, ended: bool) {
        self.awaiting_client
            .store(pipe.awaiting_body && !ended, Ordering::Relaxed);
        if std::mem::take(&mut pipe.moved) {
            let base = *self.base.get_or_init(Instant::now);
            let nanos = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.moved_at.store(nanos, Ordering::Relaxed);
        }
    }

    /// Tells `timer` what the request did since it last looked.
    fn inform(&self, timer: &mut IdleTimer) {
        if self.awaiting_client.load(Ordering::Relaxed) {
            timer.progress();
        } else if let Some(base) = self.base.get() {
            let moved = Duration::from_nanos(self.moved_at.load(Ordering::Relaxed));
            timer.progress_at(*base + moved);
        }
    }
}

/// `GET`, `HEAD`, `DELETE` and `CONNECT` requests have no defined body semantics,
/// so an empty one is not announced with `content-length: 0`.
fn has_payload_semantics(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT
    )
}

/// A body on its way into its stream: a request's upstream, a response's
/// downstream ([`super::server`]).
pub struct Pipe<B> {
    body: B,
    stream: SendStream<Bytes>,
    /// A data frame read from the body and waiting for window, with whether it
    /// ends the body.
    waiting: Option<(Bytes, bool)>,
    /// Data went into the stream since the last look.
    moved: bool,
    /// The last poll waited for the body (not for the stream's window).
    awaiting_body: bool,
    /// Why the body failed, if it did (the stream was reset for it).
    failure: Option<BodyError>,
}

impl<B: Body<Data = Bytes, Error = BodyError> + Unpin> Pipe<B> {
    pub fn new(body: B, stream: SendStream<Bytes>) -> Pipe<B> {
        Pipe {
            body,
            stream,
            waiting: None,
            moved: false,
            awaiting_body: false,
            failure: None,
        }
    }

    /// Ends the stream before its body did.
    pub fn reset(&mut self, reason: Reason) {
        self.stream.send_reset(reason);
    }

    /// Ready once the body was sent to its end, or once it cannot be (the stream
    /// was reset: by the upstream, or here because the downstream body failed).
    pub fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.awaiting_body = false;
        loop {
            // Also registers for the upstream's RST_STREAM while waiting below.
            if let Poll::Ready(reason) = self.stream.poll_reset(cx) {
                tracing::debug!(?reason, "the peer reset the stream");
                return Poll::Ready(());
            }
            if let Some((_, end)) = &self.waiting {
                let end = *end;
                while self.stream.capacity() == 0 {
                    match ready!(self.stream.poll_capacity(cx)) {
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return Poll::Ready(()),
                    }
                }
                let Some((data, _)) = self.waiting.take() else {
                    return Poll::Ready(());
                };
                self.moved = true;
                if self.stream.send_data(data, end).is_err() || end {
                    return Poll::Ready(());
                }
                continue;
            }
            // The next frame is read only after the last one had window: a slow
            // upstream slows the client rather than filling the proxy's memory.
            // Window is claimed only with a frame in hand (one byte: h2 raises the
            // claim to what is buffered), so an idle body pins none of the
            // connection's window that other streams may need.
            let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) else {
                self.awaiting_body = true;
                return Poll::Pending;
            };
            match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let end = self.body.is_end_stream();
                        if data.is_empty() {
                            if end {
                                let _ = self.stream.send_data(data, true);
                                return Poll::Ready(());
                            }
                            continue;
                        }
                        self.stream.reserve_capacity(1);
                        self.waiting = Some((data, end));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.stream.reserve_capacity(0);
                            let _ = self.stream.send_trailers(trailers);
                            return Poll::Ready(());
                        }
                    }
                },
                Some(Err(error)) => {
                    tracing::debug!(%error, "the body failed; resetting its stream");
                    self.stream.send_reset(reset_reason(&error));
                    self.failure = Some(error);
                    return Poll::Ready(());
                }
                None => {
                    let _ = self.stream.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// The reason to reset a stream with when the body it carries failed: the
/// other peer's own reset reason when it reset its stream (a client's `CANCEL`
/// goes on as `CANCEL`), else `INTERNAL_ERROR`.
fn reset_reason(error: &BodyError) -> Reason {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&**error);
    while let Some(error) = source {
        if let Some(reason) = error
            .downcast_ref::<h2::Error>()
            .and_then(h2::Error::reason)
        {
            return reason;
        }
        source = error.source();
    }
    Reason::INTERNAL_ERROR
}

/// A body received on an HTTP/2 stream (a response upstream, a request
/// downstream).
pub struct RecvBody {
    stream: RecvStream,
    data_ended: bool,
    /// Bounds each wait for the upstream's next frame (a request body's waits
    /// are not bounded here: zero).
    idle: IdleTimer,
    /// The request body still being sent, if it was when the head arrived.
    upload: Option<Arc<Upload>>,
}

type PolledFrame = Poll<Option<Result<Frame<Bytes>, BodyError>>>;

impl RecvBody {
    pub fn new(stream: RecvStream) -> RecvBody {
        RecvBody::upstream(stream, IdleTimer::new(Duration::ZERO), None)
    }

    /// A response body from an upstream: a wait longer than `idle`'s timeout,
    /// with `upload` (if any) not moving either, fails it (and dropping it
    /// resets the stream).
    fn upstream(stream: RecvStream, idle: IdleTimer, upload: Option<Arc<Upload>>) -> RecvBody {
        RecvBody {
            stream,
            data_ended: false,
            idle,
            upload,
        }
    }

    fn poll_stream(&mut self, cx: &mut Context<'_>) -> PolledFrame {
        if !self.data_ended {
            match ready!(self.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Handed on: the upstream may send as much again. Releasing
                    // fails only for a stream already closed, whose window no
                    // longer matters.
                    let _ = self.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
                None => self.data_ended = true,
            }
        }
        match ready!(self.stream.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(error.into()))),
        }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> PolledFrame {
        let polled = self.poll_stream(cx);
        if polled.is_ready() {
            self.idle.progress();
            return polled;
        }
        let this = &mut *self;
        if let Some(upload) = &this.upload {
            upload.inform(&mut this.idle);
        }
        match this.idle.poll_expired(cx) {
            Poll::Ready(after) => Poll::Ready(Some(Err(Box::new(Idle(after))))),
            Poll::Pending => polled,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.stream.is_end_stream() {
            SizeHint::with_exact(0)
        } else {
            SizeHint::default()
        }
    }
}
