//! The downstream side of an HTTP/1.1 connection, for the requests that make up
//! most keep-alive traffic: HTTP/1.1, no request body or a small one with a
//! `Content-Length` (read whole before the request goes on), no upgrade.
//!
//! hyper's server moved every request through its dispatcher: a boxed service
//! future, a body channel, and a connection state machine that parses, encodes
//! and flushes in separate steps. Here the connection's own future parses the
//! request head (`httparse`), forwards the request ([`Handler`]), and writes the
//! response head and body into one buffer that goes out in one write when the
//! body ends or has to wait.
//!
//! The first request this path does not serve (a chunked or large body, an
//! upgrade or CONNECT, `Expect`, HTTP/1.0, or a head that does not parse) hands the connection, with
//! the bytes read but not served, to hyper's server for the rest of its life
//! ([`Ended::Handover`]). So every HTTP/1 rule this module does not implement is
//! still hyper's, including its answers to malformed requests.
//!
//! While a request is forwarded, the connection is still read: bytes the client
//! pipelines are kept for later, and a client that closes its side ends the
//! exchange, which cancels the upstream request (hyper's behaviour without
//! half-close).
//!
//! Every head served here first meets [`headers::normalize_http1`] (a refused
//! one gets 400 and a close). A head whose small body is slow to follow is
//! waited for under the request-body timeout ([`super::stall`]), not the idle
//! one: 408 and a close when no body byte came for that long.

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::drain;

use super::super::io::Counted;
use super::body::{ProxyBody, ReceivedBody};
use super::date;
use super::h1client::{
    content_length, decimal, has_token, header_map, put_fields, put_number, record_spans, Span,
};
use super::stall::BodyTimeout;
use super::{headers, Handler};

pub(crate) mod fuzzing;

/// Request header fields accepted, as hyper's default; a head with more goes to
/// hyper, which answers 431.
const MAX_HEADERS: usize = 100;
/// A head still incomplete past this size goes to hyper, which is held to the
/// same bound (and answers 431).
pub const MAX_HEAD: usize = 64 * 1024;
/// The largest request body read whole here; a larger one goes to hyper.
const MAX_BODY: u64 = 64 * 1024;
/// What one read asks for while a request head is awaited.
const READ_SIZE: usize = 8 * 1024;
/// A data frame larger than this is written from its own buffer, not copied.
const COPY_MAX: usize = 16 * 1024;
/// Response bytes gathered before they are written even though the body has
/// more ready.
const WRITE_AT: usize = 64 * 1024;

/// How serving a connection here ended.
pub enum Ended {
    Closed,
    /// A request this module does not serve arrived: the connection goes on
    /// under hyper, which reads that request first.
    Handover(Rewind),
}

/// Serves requests until the connection closes, is idle for `idle` (as hyper's
/// header-read timeout: a client slowly sending a head counts as idle), drains,
/// or brings a request for hyper.
pub async fn serve(
    io: Counted,
    handler: &Handler,
    timeouts: &BodyTimeout,
    idle: Duration,
    drain: &mut drain::Watch,
) -> Ended {
    let mut conn = Downstream {
        io,
        buf: BytesMut::with_capacity(READ_SIZE),
        out: BytesMut::new(),
        spans: Vec::new(),
    };
    let mut signaled = pin!(drain.signaled_on_own_wake());
    let mut draining = false;
    // One timer for the connection, moved on only when it fires early: the
    // clock is read once per request (when its response ends), not re-armed.
    let mut quiet_since = Instant::now();
    let mut idle_timer = pin!(tokio::time::sleep(idle));
    loop {
        // While a parsed head waits for its body: when a body byte last came.
        let mut body_since: Option<Instant> = None;
        let head = loop {
            match parse_request(&mut conn.buf, &mut conn.spans) {
                Ok(Parsed::Request(head)) => break head,
                Ok(Parsed::Incomplete { body: false }) => {}
                Ok(Parsed::Incomplete { body: true }) => {
                    if body_since.is_none() {
                        let now = Instant::now();
                        body_since = Some(now);
                        if let Some(at) = now.checked_add(timeouts.timeout) {
                            idle_timer.as_mut().reset(at.into());
                        }
                    }
                }
                Err(NotServed::Invalid) => {
                    conn.refuse().await;
                    return Ended::Closed;
                }
                Err(NotServed::Other) => return Ended::Handover(conn.handover()),
            }
            let event = poll_fn(|cx| {
                if let Poll::Ready(read) = conn.poll_fill(cx) {
                    return Poll::Ready(Event::Read(read));
                }
                if !draining && signaled.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Drain);
                }
                if idle_timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Idle);
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::Read(Ok(0)) => return Ended::Closed,
                Event::Read(Ok(_)) => {
                    if body_since.is_some() {
                        body_since = Some(Instant::now());
                    }
                }
                Event::Read(Err(error)) => {
                    tracing::debug!(%error, "downstream read failed");
                    return Ended::Closed;
                }
                Event::Drain => {
                    draining = true;
                    if conn.buf.is_empty() {
                        return Ended::Closed;
                    }
                }
                Event::Idle if body_since.is_some() => {
                    let since = body_since.unwrap_or(quiet_since);
                    // The request-body timeout, not the idle one: a head came.
                    let Some(deadline) = since.checked_add(timeouts.timeout) else {
                        continue;
                    };
                    if Instant::now() >= deadline {
                        let authority = head_authority(&conn.buf);
                        let response = timeouts.rescue(authority.as_deref());
                        let _ = conn.respond(response, false, false, true).await;
                        let _ = conn.io.shutdown().await;
                        return Ended::Closed;
                    }
                    idle_timer.as_mut().reset(deadline.into());
                }
                Event::Idle => {
                    let Some(deadline) = quiet_since.checked_add(idle) else {
                        continue;
                    };
                    if Instant::now() >= deadline {
                        tracing::debug!("downstream connection idle; closing it");
                        return Ended::Closed;
                    }
                    idle_timer.as_mut().reset(deadline.into());
                }
            }
        };

        let Head {
            mut request,
            close,
            head_request,
            trailers,
        } = head;
        if let Err(malformed) = headers::normalize_http1(&mut request) {
            tracing::debug!(%malformed, "request refused");
            conn.refuse().await;
            return Ended::Closed;
        }
        let response = {
            let mut handled = pin!(handler.handle(request));
            poll_fn(|cx| {
                if let Poll::Ready(response) = handled.as_mut().poll(cx) {
                    return Poll::Ready(Some(response));
                }
                if !draining && signaled.as_mut().poll(cx).is_ready() {
                    draining = true;
                }
                // The client's side: pipelined bytes are kept (up to a bound),
                // and its close abandons the request.
                while conn.buf.len() < MAX_HEAD {
                    match conn.poll_fill(cx) {
                        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                        Poll::Ready(Ok(_)) => {}
                        Poll::Pending => break,
                    }
                }
                Poll::Pending
            })
            .await
        };
        let Some(response) = response else {
            tracing::debug!("downstream closed before its response; request abandoned");
            return Ended::Closed;
        };
        let close = close || draining;
        match conn.respond(response, head_request, trailers, close).await {
            Ok(true) if !close => {}
            Ok(_) => {
                let _ = conn.io.shutdown().await;
                return Ended::Closed;
            }
            Err(error) => {
                tracing::debug!(%error, "response not sent downstream");
                return Ended::Closed;
            }
        }
        quiet_since = Instant::now();
    }
}

enum Event {
    Read(io::Result<usize>),
    Drain,
    Idle,
}

struct Downstream {
    io: Counted,
    /// Read from the client, not yet parsed.
    buf: BytesMut,
    /// Response bytes not yet written (kept, so that its memory serves every
    /// response).
    out: BytesMut,
    /// Scratch space for parsing request heads.
    spans: Vec<Span>,
}

impl Downstream {
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 2 {
            self.buf.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    fn handover(self) -> Rewind {
        Rewind {
            read: self.buf,
            io: self.io,
        }
    }

    /// Answers a head that parsed but holds what no request may (a target or a
    /// field that `http` rejects), as hyper does: 400, then close.
    async fn refuse(&mut self) {
        let _ = self
            .io
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await;
        let _ = self.io.shutdown().await;
    }

    /// Writes the response: its head, then its body as it comes. `Ok(false)`: the
    /// body was cut short, so the connection cannot carry another request.
    async fn respond(
        &mut self,
        response: Response<ProxyBody>,
        head_request: bool,
        trailers: bool,
        close: bool,
    ) -> io::Result<bool> {
        let (mut parts, mut body) = response.into_parts();
        let status = parts.status;
        let bodyless = head_request
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let out = &mut self.out;
        out.reserve(1024);
        out.put_slice(b"HTTP/1.1 ");
        out.put_slice(status.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.put_slice(b"\r\n");
        let mut framing = Framing::None;
        if !bodyless {
            let declared = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .map(content_length);
            framing = match declared {
                Some(Some(length)) => Framing::Length(length),
                Some(None) => {
                    // Not a length this side can promise: chunked instead.
                    parts.headers.remove(header::CONTENT_LENGTH);
                    Framing::Chunked
                }
                None => {
                    let known = if body.is_end_stream() {
                        Some(0)
                    } else {
                        body.size_hint().exact()
                    };
                    match known {
                        Some(length) => {
                            out.put_slice(b"content-length: ");
                            put_number(out, length, 10);
                            out.put_slice(b"\r\n");
                            Framing::Length(length)
                        }
                        None => Framing::Chunked,
                    }
                }
            };
            if framing == Framing::Chunked {
                out.put_slice(b"transfer-encoding: chunked\r\n");
            }
        }
        if !parts.headers.contains_key(header::DATE) {
            out.put_slice(b"date: ");
            out.put_slice(date::now().as_bytes());
            out.put_slice(b"\r\n");
        }
        if close {
            out.put_slice(b"connection: close\r\n");
        }
        put_fields(out, &parts.headers);
        out.put_slice(b"\r\n");
        drop(parts);
        if framing == Framing::None {
            drop(body);
            self.flush().await?;
            return Ok(true);
        }

        let mut left = match framing {
            Framing::Length(length) => length,
            _ => u64::MAX,
        };
        let chunked = framing == Framing::Chunked;
        let mut ended = false;
        loop {
            // Polled once; if the body has to wait, what is gathered goes out
            // before waiting for it.
            let polled = poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
            let frame = match polled {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    self.flush().await?;
                    poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                }
            };
            match frame {
                None => break,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if !chunked && data.len() as u64 > left {
                            return Err(io::Error::other("response body longer than its length"));
                        }
                        left = left.saturating_sub(data.len() as u64);
                        self.put_data(data, chunked).await?;
                    }
                    Err(frame) => {
                        if let (Ok(fields), true) = (frame.into_trailers(), chunked && trailers) {
                            self.out.put_slice(b"0\r\n");
                            put_trailers(&mut self.out, &fields);
                            self.out.put_slice(b"\r\n");
                            ended = true;
                        }
                    }
                },
                Some(Err(error)) => {
                    // The client sees the body cut short: the connection closes.
                    tracing::debug!(%error, "response body failed");
                    self.flush().await?;
                    return Ok(false);
                }
            }
        }
        if chunked && !ended {
            self.out.put_slice(b"0\r\n\r\n");
        }
        self.flush().await?;
        Ok(chunked || left == 0)
    }

    async fn put_data(&mut self, data: Bytes, chunked: bool) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if chunked {
            put_number(&mut self.out, data.len() as u64, 16);
            self.out.put_slice(b"\r\n");
        }
        if data.len() <= COPY_MAX {
            self.out.put_slice(&data);
        } else {
            self.flush().await?;
            self.io.write_all(&data).await?;
        }
        if chunked {
            self.out.put_slice(b"\r\n");
        }
        if self.out.len() >= WRITE_AT {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.out.clear();
        }
        self.io.flush().await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (a response to HEAD, a 204 or a 304).
    None,
    Length(u64),
    Chunked,
}

/// Writes trailer fields, less those a trailer section must not carry (framing,
/// routing, authentication and content metadata; RFC 9110 section 6.5.1), as
/// hyper leaves them out.
fn put_trailers(out: &mut BytesMut, fields: &HeaderMap) {
    for (name, value) in fields {
        let forbidden = matches!(
            *name,
            header::AUTHORIZATION
                | header::CACHE_CONTROL
                | header::CONTENT_ENCODING
                | header::CONTENT_LENGTH
                | header::CONTENT_RANGE
                | header::CONTENT_TYPE
                | header::HOST
                | header::MAX_FORWARDS
                | header::SET_COOKIE
                | header::TRAILER
                | header::TRANSFER_ENCODING
                | header::TE
        );
        if !forbidden {
            out.put_slice(name.as_str().as_bytes());
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
            out.put_slice(b"\r\n");
        }
    }
}

/// A request this module serves (its body, if any, read whole), and what its head
/// says about the response.
struct Head {
    request: Request<ReceivedBody>,
    /// `Connection: close`: the connection ends after the response.
    close: bool,
    /// The response has no body, whatever it says.
    head_request: bool,
    /// `TE: trailers`: a chunked response may end with trailer fields.
    trailers: bool,
}

/// How far parsing got when it did not refuse the request.
// Returned by value and matched at once, never stored: boxing the head would
// cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Request(Head),
    /// More bytes are needed: of the head, or (`body`) of a small body whose head
    /// is complete.
    Incomplete {
        body: bool,
    },
}

/// Why a request head is not served here.
#[derive(Debug)]
enum NotServed {
    /// Parsed, but not a request `http` can hold.
    Invalid,
    /// A request for hyper (or bytes that are no request).
    Other,
}

/// Parses a request head from the front of `buf`, removing it only when it is
/// served here.
fn parse_request(buf: &mut BytesMut, spans: &mut Vec<Span>) -> Result<Parsed, NotServed> {
    if buf.is_empty() {
        return Ok(Parsed::Incomplete { body: false });
    }
    // Uninitialised: filling 100 empty fields would cost more than the parse.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => {
            return Ok(Parsed::Incomplete { body: false })
        }
        _ => return Err(NotServed::Other),
    };
    if parsed.version != Some(1) {
        return Err(NotServed::Other);
    }
    let (Some(method), Some(path)) = (parsed.method, parsed.path) else {
        return Err(NotServed::Other);
    };
    let method = match Method::from_bytes(method.as_bytes()) {
        Ok(Method::CONNECT) => return Err(NotServed::Other),
        Ok(method) => method,
        Err(_) => return Err(NotServed::Other),
    };
    let mut close = false;
    let mut trailers = false;
    let mut length = None;
    for field in parsed.headers.iter() {
        let name = field.name.as_bytes();
        // By length first: most fields are none of these.
        let served = match name.len() {
            // A chunked body, a switch of protocol, or an expectation.
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => false,
            // One length, however many times it is given.
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                match (decimal(field.value), length) {
                    (Some(n), None) => {
                        length = Some(n);
                        true
                    }
                    (Some(n), Some(known)) => n == known,
                    (None, _) => false,
                }
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => false,
            6 if name.eq_ignore_ascii_case(b"expect") => false,
            10 if name.eq_ignore_ascii_case(b"connection") => {
                close |= has_token(field.value, b"close");
                true
            }
            2 if name.eq_ignore_ascii_case(b"te") => {
                trailers |= has_token(field.value, b"trailers");
                true
            }
            _ => true,
        };
        if !served {
            return Err(NotServed::Other);
        }
    }
    // A small body is read whole before the request goes on; a larger one is
    // streamed by hyper.
    let length = length.unwrap_or(0);
    if length > MAX_BODY {
        return Err(NotServed::Other);
    }
    if length > (buf.len() - len) as u64 {
        return Ok(Parsed::Incomplete { body: true });
    }
    // Offsets into the head, so that the target and the values share its bytes
    // once it is frozen.
    let path_start = path.as_ptr() as usize - buf.as_ptr() as usize;
    let path = path_start..path_start + path.len();
    record_spans(buf, parsed.headers, spans);
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path)) else {
        return Err(NotServed::Invalid);
    };
    let Ok(headers) = header_map(&head, spans) else {
        return Err(NotServed::Invalid);
    };
    let body = match length {
        0 => ReceivedBody::Empty,
        length => ReceivedBody::Whole(Some(buf.split_to(length as usize).freeze())),
    };
    let head_request = method == Method::HEAD;
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Ok(Parsed::Request(Head {
        request,
        close,
        head_request,
        trailers,
    }))
}

/// The authority of the request head at the front of `buf` (an absolute-form
/// target's, else Host), for the answer to a request that was never forwarded.
fn head_authority(buf: &[u8]) -> Option<String> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    parsed.parse(buf).ok()?;
    let target = parsed.path.and_then(|path| path.parse::<Uri>().ok());
    if let Some(authority) = target.as_ref().and_then(Uri::authority) {
        return Some(authority.as_str().to_owned());
    }
    let host = parsed
        .headers
        .iter()
        .find(|field| field.name.eq_ignore_ascii_case("host"))?;
    std::str::from_utf8(host.value).ok().map(str::to_owned)
}

/// A connection handed to hyper: the bytes read but not served come first.
pub struct Rewind {
    read: BytesMut,
    io: Counted,
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read.is_empty() {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> (Result<Parsed, NotServed>, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        let parsed = parse_request(&mut buf, &mut Vec::new());
        (parsed, buf)
    }

    #[test]
    fn a_bodyless_http1_1_request_is_served_here_and_leaves_what_follows() {
        let (parsed, rest) = parse(
            b"GET /a?b=1 HTTP/1.1\r\nHost: orders\r\nConnection: close\r\nTE: trailers\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next",
        );
        let Ok(Parsed::Request(head)) = parsed else {
            panic!("not served here");
        };
        assert_eq!(head.request.method(), Method::GET);
        assert_eq!(head.request.uri(), "/a?b=1");
        assert_eq!(head.request.headers()["host"], "orders");
        assert_eq!(head.request.headers().get_all("x-two").iter().count(), 2);
        assert!(head.close && head.trailers && !head.head_request);
        assert!(head.request.body().is_end_stream());
        assert_eq!(&rest[..], b"GET /next");
    }

    #[test]
    fn requests_for_hyper_are_left_unread() {
        for request in [
            &b"POST / HTTP/1.1\r\ncontent-length: 70000\r\n\r\nabc"[..],
            b"POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
            b"POST / HTTP/1.1\r\ncontent-length: +3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\ncontent-length: 0\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
        ] {
            let (parsed, rest) = parse(request);
            assert!(matches!(parsed, Err(NotServed::Other)), "{request:?}");
            assert_eq!(&rest[..], request, "bytes consumed");
        }
    }

    #[test]
    fn a_small_body_is_read_whole_and_waited_for_until_it_is() {
        let (parsed, rest) = parse(b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /next");
        let Ok(Parsed::Request(head)) = parsed else {
            panic!("not served here");
        };
        let ReceivedBody::Whole(Some(body)) = head.request.body() else {
            panic!("no whole body");
        };
        assert_eq!(&body[..], b"hello");
        assert_eq!(&rest[..], b"GET /next");
        let partial = b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel";
        let (parsed, rest) = parse(partial);
        assert!(matches!(parsed, Ok(Parsed::Incomplete { body: true })));
        assert_eq!(&rest[..], partial, "bytes consumed");
    }

    #[test]
    fn an_empty_declared_body_and_a_split_head() {
        let (parsed, _) = parse(b"DELETE /x HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        assert!(matches!(parsed, Ok(Parsed::Request(_))));
        let (parsed, rest) = parse(b"GET /x HTTP/1.1\r\nHost: a\r\n");
        assert!(matches!(parsed, Ok(Parsed::Incomplete { body: false })));
        assert_eq!(rest.len(), 26);
    }

    #[test]
    fn a_target_no_uri_can_hold_is_invalid_once_parsed() {
        for target in ["/a<b", "/a`b", "http://[::1/", "a/b"] {
            let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\nGET /next");
            let (parsed, rest) = parse(request.as_bytes());
            assert!(matches!(parsed, Err(NotServed::Invalid)), "{target}");
            assert_eq!(&rest[..], b"GET /next");
        }
    }

    #[test]
    fn a_stalled_head_names_its_authority() {
        let head = b"POST http://web.t/x HTTP/1.1\r\nHost: other.t\r\nContent-Length: 9\r\n\r\nabc";
        assert_eq!(head_authority(head).as_deref(), Some("web.t"));
        let head = b"POST /x HTTP/1.1\r\nHost: web.t\r\nContent-Length: 9\r\n\r\nabc";
        assert_eq!(head_authority(head).as_deref(), Some("web.t"));
        assert_eq!(head_authority(b"POST /x HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn numbers_are_written_as_http_wants_them() {
        let mut out = BytesMut::new();
        put_number(&mut out, 0, 10);
        out.put_u8(b' ');
        put_number(&mut out, 10_485_760, 10);
        out.put_u8(b' ');
        put_number(&mut out, 0x1f40, 16);
        out.put_u8(b' ');
        put_number(&mut out, 0, 16);
        out.put_u8(b' ');
        put_number(&mut out, u64::MAX, 10);
        assert_eq!(&out[..], b"0 10485760 1f40 0 18446744073709551615");
    }
}
