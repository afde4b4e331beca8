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
//! stream (`RST_STREAM CANCEL`), as does a downstream body that fails.
//!
//! [`RecvBody`] is the response body: the stream's data frames, then its
//! trailers, with the window given back as each frame is handed on.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{Reason, RecvStream, SendStream};
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Method, Request, Response};
use hyper::body::{Body, Frame, SizeHint};

use super::body::{BodyError, RequestBody};

/// A request the upstream did not take: whether it came back unsent.
pub enum Refusal {
    /// The connection could not open a stream; the request is intact (boxed, as
    /// for [`super::attempt::Failure`]: rare, and the request is large).
    Unsent(Box<Request<RequestBody>>, h2::Error),
    /// The stream was opened (the upstream may have seen the request) and failed.
    Sent(h2::Error),
}

/// Sends `request` on a stream of `sender`'s connection and waits for the
/// response head.
pub async fn exchange(
    sender: SendRequest<Bytes>,
    request: Request<RequestBody>,
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
    let response = if ended {
        response.await
    } else {
        with_body(response, Pipe::new(body, stream)).await
    };
    match response {
        Ok(response) => Ok(response.map(RecvBody::new)),
        Err(error) => Err(Refusal::Sent(error)),
    }
}

/// Waits for the response head while piping the request body; a body still
/// streaming when the head arrives goes on in a task of its own.
async fn with_body(
    mut response: ResponseFuture,
    mut pipe: Pipe<RequestBody>,
) -> Result<Response<RecvStream>, h2::Error> {
    let mut piping = true;
    let head = poll_fn(|cx| {
        if piping && pipe.poll_send(cx).is_ready() {
            piping = false;
        }
        Pin::new(&mut response).poll(cx)
    })
    .await;
    if piping && head.is_ok() {
        tokio::spawn(async move { poll_fn(|cx| pipe.poll_send(cx)).await });
    }
    head
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
}

impl<B: Body<Data = Bytes, Error = BodyError> + Unpin> Pipe<B> {
    pub fn new(body: B, stream: SendStream<Bytes>) -> Pipe<B> {
        Pipe {
            body,
            stream,
            waiting: None,
        }
    }

    /// Ends the stream before its body did.
    pub fn reset(&mut self, reason: Reason) {
        self.stream.send_reset(reason);
    }

    /// Ready once the body was sent to its end, or once it cannot be (the stream
    /// was reset: by the upstream, or here because the downstream body failed).
    pub fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<()> {
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
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
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
}

impl RecvBody {
    pub fn new(stream: RecvStream) -> RecvBody {
        RecvBody {
            stream,
            data_ended: false,
        }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_ended {
            match ready!(self.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Handed on: the upstream may send as much again. Releasing
                    // fails only for a stream already closed, whose window no
                    // longer matters.
                    let _ = self.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => self.data_ended = true,
            }
        }
        match ready!(self.stream.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(error))),
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
