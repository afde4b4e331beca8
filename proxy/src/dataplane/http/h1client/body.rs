//! An upstream HTTP/1.1 response body, read from its connection as the
//! downstream side asks for it: data frames share the read buffer (no copy),
//! a chunked body's trailers become a trailers frame, and once the body ended
//! the connection goes back to its endpoint's pool (when it may carry another
//! request, its request was all sent, and nothing unasked follows the body).
//! A request body still being sent when the response began is sent on from
//! here, each time the body is polled. An upstream that sends nothing for the
//! response inactivity timeout while the body is asked for fails the body: the
//! downstream response is cut (HTTP/1: its connection closes mid-body; HTTP/2:
//! `RST_STREAM`) and the upstream connection is closed.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, SizeHint};

use super::super::super::endpoint::Endpoint;
use super::super::body::BodyError;
use super::head::{parse_chunk_size, parse_trailers, Framing};
use super::{Connection, Error, Upload};

pub struct ResponseBody {
    /// `None` once the body ended (or failed).
    pub(super) connection: Option<Box<Connection>>,
    state: State,
    keep_alive: bool,
    /// The rest of the request, while it is being sent.
    upload: Option<Box<Upload>>,
    endpoint: Arc<Endpoint>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Bytes still to read.
    Length(u64),
    /// Before a chunk-size line.
    ChunkSize,
    /// Bytes of the current chunk still to read.
    ChunkData(u64),
    /// The line end after a chunk's data.
    ChunkEnd,
    /// After the last chunk: the trailer section and the final line end.
    Trailers,
    /// Until the connection closes.
    Close,
    Done,
}

impl ResponseBody {
    pub(super) fn new(
        connection: Box<Connection>,
        framing: Framing,
        keep_alive: bool,
        upload: Option<Box<Upload>>,
        endpoint: Arc<Endpoint>,
    ) -> ResponseBody {
        let state = match framing {
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        let mut body = ResponseBody {
            connection: Some(connection),
            state,
            keep_alive,
            upload,
            endpoint,
        };
        if let State::Length(0) = body.state {
            body.finish();
        }
        body
    }

    /// The body ended: its connection goes back to the pool if it can be used
    /// again.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(mut connection) = self.connection.take() {
            if self.keep_alive && self.upload.is_none() && connection.buf.is_empty() {
                connection.rest();
                self.endpoint.clients.http1.checkin(connection);
            }
        }
    }

    fn fail(&mut self, error: Error) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.state = State::Done;
        self.connection = None;
        Poll::Ready(Some(Err(Box::new(error))))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = this.poll_body(cx);
        if polled.is_ready() {
            return polled;
        }
        let Some(connection) = this.connection.as_mut() else {
            return polled;
        };
        let awaiting_client = this.upload.as_ref().is_some_and(|u| u.awaiting_client);
        if std::mem::take(&mut connection.moved) || awaiting_client {
            connection.idle.progress();
        }
        match connection.idle.poll_expired(cx) {
            Poll::Ready(after) => this.fail(Error::Idle(after)),
            Poll::Pending => polled,
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl ResponseBody {
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self;
        if let (Some(upload), Some(connection)) = (this.upload.as_mut(), this.connection.as_mut()) {
            match upload.poll(connection, cx) {
                Poll::Ready(Ok(())) => this.upload = None,
                Poll::Ready(Err(error)) => {
                    // The response may still be whole; the connection is not.
                    tracing::debug!(%error, "request body not sent to its end");
                    this.upload = None;
                    this.keep_alive = false;
                }
                Poll::Pending => {}
            }
        }
        loop {
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            let buf = &mut connection.buf;
            if !buf.is_empty() {
                match this.state {
                    State::Length(left) | State::ChunkData(left) => {
                        let take = (buf.len() as u64).min(left) as usize;
                        let data = buf.split_to(take).freeze();
                        let left = left - take as u64;
                        match this.state {
                            State::Length(_) if left == 0 => this.finish(),
                            State::Length(_) => this.state = State::Length(left),
                            _ if left == 0 => this.state = State::ChunkEnd,
                            _ => this.state = State::ChunkData(left),
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    State::Close => {
                        let data = buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    State::ChunkSize => match parse_chunk_size(buf) {
                        Ok(Some((size, line))) => {
                            buf.advance(line);
                            this.state = match size {
                                0 => State::Trailers,
                                n => State::ChunkData(n),
                            };
                            continue;
                        }
                        Ok(None) => {}
                        Err(error) => return this.fail(error),
                    },
                    State::ChunkEnd if buf.len() >= 2 => {
                        if &buf[..2] != b"\r\n" {
                            return this.fail(Error::ChunkSize);
                        }
                        buf.advance(2);
                        this.state = State::ChunkSize;
                        continue;
                    }
                    State::ChunkEnd => {}
                    State::Trailers => match parse_trailers(buf) {
                        Ok(Some(trailers)) => {
                            this.finish();
                            if trailers.is_empty() {
                                return Poll::Ready(None);
                            }
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        Ok(None) => {}
                        Err(error) => return this.fail(error),
                    },
                    State::Done => return Poll::Ready(None),
                }
            }
            match connection.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    if let State::Close = this.state {
                        this.keep_alive = false;
                        this.finish();
                        return Poll::Ready(None);
                    }
                    return this.fail(Error::BodyClosed);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(Error::Io(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
