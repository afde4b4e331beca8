//! The proxy's HTTP/1.1 client: one request at a time on a pooled keep-alive
//! connection, driven by the request's own future.
//!
//! hyper's client connection ran as a task of its own: each request went to it
//! through a channel, and its response came back through another, so that every
//! request cost two task wake-ups and its futures were moved through several
//! layers. Here the request's future writes the request and reads the response
//! head itself, and the response body ([`ResponseBody`]) reads the rest from the
//! connection as the downstream side asks for it, then puts the connection back
//! in its pool. Upgrades (`101 Switching Protocols`) stay on hyper's client, which
//! hands the connection over to the tunnel.
//!
//! While the request body is still being sent, the response is read too. A
//! response head that arrives first is returned at once, and the response body
//! goes on sending the request body ([`Upload`]) as it is read: an echo server
//! streams its answer while it reads, and one that answers early (a 413, say)
//! may never read the rest. A connection whose request was not all sent when its
//! response ended is closed, not pooled.
//!
//! Whose failure it was matters to the forwarder: a request body that fails
//! ([`Error::RequestBody`], [`Error::BodyLength`]) is the downstream client's,
//! anything else the upstream's. A wait on the upstream is bounded by the
//! response inactivity timeout ([`IdleTimer`]), for the head here and for each
//! piece of the body in [`ResponseBody`].

mod body;
pub(crate) mod fuzzing;
mod head;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use hyper::body::{Body, Frame};
use tokio::io::AsyncWrite;

pub use body::ResponseBody;
pub use head::{
    content_length, decimal, has_token, header_map, put_fields, put_number, record_spans, Span,
};
use head::{encode_request, parse_chunk_size, parse_response, Framing, Sending};

use super::super::endpoint::Endpoint;
use super::super::io::Conn;
use super::body::{Buffered, ReceivedBody, RequestBody};
use super::idle::IdleTimer;
use crate::resilience::breaker::Permit;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("connection closed before the response head")]
    Closed,
    #[error("connection closed before the end of the response body")]
    BodyClosed,
    #[error("malformed response: {0}")]
    Malformed(httparse::Error),
    #[error("response head larger than 64 KiB")]
    HeadTooLarge,
    #[error("invalid status code {0}")]
    Status(u16),
    #[error("invalid header name in response")]
    HeaderName,
    #[error("invalid header value in response")]
    HeaderValue,
    #[error("invalid Content-Length in response")]
    ResponseLength,
    #[error("invalid chunk size in response body")]
    ChunkSize,
    #[error("invalid Content-Length in request")]
    RequestLength,
    #[error("request body does not match its Content-Length")]
    BodyLength,
    #[error("request body failed: {0}")]
    RequestBody(super::body::BodyError),
    #[error("unexpected 101 Switching Protocols")]
    UnexpectedSwitch,
    #[error("upstream sent nothing for {0:?}")]
    Idle(std::time::Duration),
}

impl Error {
    /// Whether the downstream client caused it: its request body failed, or did
    /// not match its length. Nothing to hold against the upstream.
    pub fn from_client(&self) -> bool {
        matches!(self, Error::RequestBody(_) | Error::BodyLength)
    }
}

/// The largest body written with its head when it is already in memory.
const INLINE_BODY: u64 = 16 * 1024;

/// The smallest and largest amounts asked of one read: a small response costs an
/// 8 KiB buffer, a large body grows it so that it is not read 8 KiB at a time.
const READ_MIN: usize = 8 * 1024;
const READ_MAX: usize = 256 * 1024;

/// An upstream HTTP/1.1 connection and the bytes read from it but not yet used.
#[derive(Debug)]
pub struct Connection {
    io: Conn,
    buf: BytesMut,
    /// How much the next read asks for.
    read_size: usize,
    /// Where request heads are written.
    head: BytesMut,
    /// Scratch space for parsing response heads.
    spans: Vec<head::Span>,
    /// Bytes to write, in order (kept, so that its allocation serves every
    /// request).
    queue: VecDeque<Bytes>,
    /// Whether bytes moved either way since the last look: the response
    /// inactivity timer's evidence that the upstream is alive.
    moved: bool,
    /// The response inactivity timer of the exchange in progress. It lives with
    /// the connection, not the exchange, so that its registered timer is moved
    /// on from one request to the next (a later deadline is an atomic store in
    /// tokio's timer) rather than made and dropped for every request.
    idle: IdleTimer,
    /// Counts the connection against its destination's limit while it lives.
    _permit: Option<Permit>,
}

impl Connection {
    pub fn new(io: Conn, permit: Option<Permit>) -> Box<Connection> {
        Box::new(Connection {
            io,
            buf: BytesMut::new(),
            read_size: READ_MIN,
            head: BytesMut::new(),
            spans: Vec::new(),
            queue: VecDeque::new(),
            moved: false,
            idle: IdleTimer::new(std::time::Duration::ZERO),
            _permit: permit,
        })
    }

    /// Whether an idle connection can carry a request: the peer has neither
    /// closed it nor sent anything unasked. Costs no system call while the socket
    /// has nothing to read (the runtime knows it is not readable).
    pub fn usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        matches!(self.poll_fill(&mut cx), Poll::Pending)
    }

    /// Made ready for the pool: a buffer grown by a large body is let go.
    fn rest(&mut self) {
        if self.buf.capacity() > READ_MIN * 2 {
            self.buf = BytesMut::new();
        }
        self.read_size = READ_MIN;
    }

    /// Reads more into the buffer: the number of bytes read, 0 at the end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let spare = self.buf.capacity() - self.buf.len();
        if spare < self.read_size / 2 {
            self.buf.reserve(self.read_size);
        }
        let asked = self.buf.capacity() - self.buf.len();
        let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf);
        if let Poll::Ready(Ok(n)) = read {
            self.moved |= n > 0;
            if n == asked {
                self.read_size = (self.read_size * 2).min(READ_MAX);
            }
        }
        read
    }
}

/// An exchange that failed: with the request, when none of it was written (it
/// may go to another connection), or after it was.
pub enum Refusal {
    Unsent(Box<Request<RequestBody>>, Error),
    Sent(Error),
}

/// Sends `request` on `connection` and reads the response head. The response's
/// body reads the rest and returns the connection to `endpoint`'s pool. Either
/// fails with [`Error::Idle`] after waiting `idle` on a silent upstream (zero:
/// no limit).
pub fn exchange(
    mut connection: Box<Connection>,
    request: Request<RequestBody>,
    endpoint: &Arc<Endpoint>,
    idle: std::time::Duration,
) -> Exchange {
    connection.idle.start(idle);
    Exchange {
        connection: Some(connection),
        state: State::Start(request),
        upload: Upload::default(),
        head_request: false,
        endpoint: endpoint.clone(),
    }
}

pub struct Exchange {
    connection: Option<Box<Connection>>,
    state: State,
    upload: Upload,
    head_request: bool,
    endpoint: Arc<Endpoint>,
}

enum State {
    Start(Request<RequestBody>),
    /// The head is queued; the request is kept whole until a byte of it is out,
    /// so that it can be given back.
    Head(Parts, RequestBody),
    /// The body is being sent (by [`Upload`]) while the response is read.
    Body,
    /// The request is all out; reading the response.
    Sent,
    Done,
}

type Polled = Poll<Result<Response<ReceivedBody>, Refusal>>;

impl Future for Exchange {
    type Output = Result<Response<ReceivedBody>, Refusal>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = self.get_mut();
        let polled = this.poll_exchange(cx);
        if polled.is_ready() {
            return polled;
        }
        let Some(connection) = this.connection.as_mut() else {
            return polled;
        };
        if std::mem::take(&mut connection.moved) || this.upload.awaiting_client {
            connection.idle.progress();
        }
        match connection.idle.poll_expired(cx) {
            Poll::Ready(after) => this.fail(Error::Idle(after)),
            Poll::Pending => polled,
        }
    }
}

impl Exchange {
    fn poll_exchange(&mut self, cx: &mut Context<'_>) -> Polled {
        let this = self;
        if let State::Start(_) = this.state {
            if let Err(refusal) = this.start() {
                return Poll::Ready(Err(refusal));
            }
        }
        let Some(connection) = this.connection.as_mut() else {
            return Poll::Pending;
        };
        if let State::Head(..) = this.state {
            let mut wrote = false;
            let written = write_queue(connection, &mut wrote, cx);
            if let Poll::Ready(Err(e)) = written {
                let refusal = match std::mem::replace(&mut this.state, State::Done) {
                    State::Head(parts, body) if !wrote => {
                        let body = this.upload.restore(body);
                        Refusal::Unsent(Box::new(Request::from_parts(parts, body)), Error::Io(e))
                    }
                    _ => Refusal::Sent(Error::Io(e)),
                };
                this.connection = None;
                return Poll::Ready(Err(refusal));
            }
            if !wrote && written.is_pending() {
                return Poll::Pending;
            }
            // Some of the head is out: the request's parts go, its body stays.
            if let State::Head(_, body) = std::mem::replace(&mut this.state, State::Body) {
                if this.upload.sending != Sending::Empty {
                    this.upload.body = Some(body);
                }
            }
        }
        if let State::Body = this.state {
            match this.upload.poll(connection, cx) {
                Poll::Ready(Ok(())) => this.state = State::Sent,
                Poll::Ready(Err(error)) => return this.fail(error),
                Poll::Pending => {}
            }
        }
        let head = loop {
            let parsed = parse_response(
                &mut connection.buf,
                &mut connection.spans,
                this.head_request,
            );
            match parsed {
                Ok(Some(head)) if head.status == StatusCode::SWITCHING_PROTOCOLS => {
                    return this.fail(Error::UnexpectedSwitch)
                }
                // 100 Continue and other interim responses are not forwarded.
                Ok(Some(head)) if head.status.is_informational() => continue,
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(error) => return this.fail(error),
            }
            match connection.poll_fill(cx) {
                Poll::Ready(Ok(0)) => return this.fail(Error::Closed),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(Error::Io(e)),
                Poll::Pending => return Poll::Pending,
            }
        };
        // The first chunk's size usually comes with the head: a malformed one fails
        // the response while the client can still be told so (502).
        if head.framing == Framing::Chunked {
            if let Err(error) = parse_chunk_size(&connection.buf) {
                return this.fail(error);
            }
        }
        let Some(connection) = this.connection.take() else {
            return Poll::Pending;
        };
        // The response came before the request was all out: its body carries on.
        let upload = match std::mem::replace(&mut this.state, State::Done) {
            State::Body => Some(Box::new(std::mem::take(&mut this.upload))),
            _ => None,
        };
        let mut connection = connection;
        connection.idle.progress();
        let body = ResponseBody::new(
            connection,
            head.framing,
            head.keep_alive,
            upload,
            this.endpoint.clone(),
        );
        let mut response = Response::new(ReceivedBody::Http1Upstream(body));
        *response.status_mut() = head.status;
        *response.version_mut() = head.version;
        *response.headers_mut() = head.headers;
        Poll::Ready(Ok(response))
    }

    /// Queues the request head.
    fn start(&mut self) -> Result<(), Refusal> {
        let State::Start(request) = std::mem::replace(&mut self.state, State::Done) else {
            return Ok(());
        };
        let (parts, body) = request.into_parts();
        let known = match body.is_end_stream() {
            true => Some(0),
            false => body.size_hint().exact(),
        };
        let Some(connection) = self.connection.as_mut() else {
            let request = Box::new(Request::from_parts(parts, body));
            return Err(Refusal::Unsent(request, Error::Closed));
        };
        match encode_request(&parts, known, &mut connection.head) {
            Ok((head, sending)) => {
                connection.queue.push_back(head);
                let mut body = body;
                self.upload.sending = sending;
                // A small body already in memory goes out with the head, in one
                // write: an upstream that answers before reading the body then
                // still finds it there, and keeps the connection.
                if matches!(sending, Sending::Length(n) if n <= INLINE_BODY) {
                    if let Some(data) = body.take_whole() {
                        if Sending::Length(data.len() as u64) == sending {
                            connection.queue.push_back(data.clone());
                            self.upload.sending = Sending::Empty;
                            self.upload.inline = Some(data);
                        } else {
                            body = RequestBody::Buffered(Buffered::whole(data));
                        }
                    }
                }
                self.head_request = parts.method == Method::HEAD;
                self.state = State::Head(parts, body);
                Ok(())
            }
            Err(error) => Err(Refusal::Unsent(
                Box::new(Request::from_parts(parts, body)),
                error,
            )),
        }
    }

    fn fail(&mut self, error: Error) -> Polled {
        self.state = State::Done;
        self.connection = None;
        Poll::Ready(Err(Refusal::Sent(error)))
    }
}

/// The rest of a request body on its way out, after its head.
#[derive(Default)]
pub struct Upload {
    /// `None` once the body ended.
    body: Option<RequestBody>,
    sending: Sending,
    /// A body queued whole with the head, kept until a byte of the request is
    /// out so that the request can still be given back.
    inline: Option<Bytes>,
    /// The last poll waited for the client's next piece of body: a wait that is
    /// not the upstream's.
    awaiting_client: bool,
}

impl Upload {
    /// The request's body as it was before its data was queued with the head.
    fn restore(&mut self, body: RequestBody) -> RequestBody {
        match self.inline.take() {
            Some(data) => RequestBody::Buffered(Buffered::whole(data)),
            None => body,
        }
    }

    /// Writes what is queued and moves the body into the queue: ready once the
    /// whole request is out.
    fn poll(
        &mut self,
        connection: &mut Connection,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        self.awaiting_client = false;
        loop {
            let mut wrote = false;
            ready!(write_queue(connection, &mut wrote, cx))?;
            let Some(body) = self.body.as_mut() else {
                // TLS may hold written bytes until flushed.
                return Pin::new(&mut connection.io)
                    .poll_flush(cx)
                    .map_err(Error::Io);
            };
            let Poll::Ready(frame) = Pin::new(body).poll_frame(cx) else {
                self.awaiting_client = true;
                return Poll::Pending;
            };
            match frame {
                Some(Ok(frame)) => self.queue_frame(&mut connection.queue, frame)?,
                Some(Err(e)) => return Poll::Ready(Err(Error::RequestBody(e))),
                None => {
                    self.queue_end(&mut connection.queue)?;
                    self.body = None;
                }
            }
        }
    }

    fn queue_frame(
        &mut self,
        queue: &mut VecDeque<Bytes>,
        frame: Frame<Bytes>,
    ) -> Result<(), Error> {
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                // Trailers: sent only in a chunked body, which then ends.
                if let (Sending::Chunked, Ok(trailers)) = (self.sending, frame.into_trailers()) {
                    let mut end = BytesMut::from(&b"0\r\n"[..]);
                    put_fields(&mut end, &trailers);
                    end.extend_from_slice(b"\r\n");
                    queue.push_back(end.freeze());
                    self.sending = Sending::Empty;
                }
                return Ok(());
            }
        };
        if data.is_empty() {
            return Ok(());
        }
        match self.sending {
            Sending::Length(left) => {
                let left = left
                    .checked_sub(data.len() as u64)
                    .ok_or(Error::BodyLength)?;
                self.sending = Sending::Length(left);
                queue.push_back(data);
            }
            Sending::Chunked => {
                queue.push_back(Bytes::from(format!("{:x}\r\n", data.len())));
                queue.push_back(data);
                queue.push_back(Bytes::from_static(b"\r\n"));
            }
            // Past the trailers (or a body declared empty): nothing more may go.
            Sending::Empty => return Err(Error::BodyLength),
        }
        Ok(())
    }

    /// The body ended: a chunked body's last chunk, or a check that all the
    /// announced bytes went.
    fn queue_end(&mut self, queue: &mut VecDeque<Bytes>) -> Result<(), Error> {
        match self.sending {
            Sending::Length(0) | Sending::Empty => Ok(()),
            Sending::Length(_) => Err(Error::BodyLength),
            Sending::Chunked => {
                queue.push_back(Bytes::from_static(b"0\r\n\r\n"));
                self.sending = Sending::Empty;
                Ok(())
            }
        }
    }
}

/// Writes the queue, gathering its pieces into one vectored write.
fn write_queue(
    connection: &mut Connection,
    wrote: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    let Connection {
        io, queue, moved, ..
    } = connection;
    while !queue.is_empty() {
        let mut slices = [IoSlice::new(&[]); 16];
        let mut count = 0;
        for (slice, piece) in slices.iter_mut().zip(queue.iter()) {
            *slice = IoSlice::new(piece);
            count += 1;
        }
        let n = match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        *wrote = true;
        *moved = true;
        let mut left = n;
        while left > 0 {
            let Some(front) = queue.front_mut() else {
                break;
            };
            if front.len() <= left {
                left -= front.len();
                queue.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
    }
    Poll::Ready(Ok(()))
}
