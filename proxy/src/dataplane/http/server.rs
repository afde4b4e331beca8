//! The downstream side of an HTTP/2 connection (h2c, or h2 inside mTLS) on the
//! `h2` crate. Every stream is a future polled by the connection's own task,
//! alongside the connection itself: no task is spawned per stream, unlike hyper's
//! server, which spawns one for each. A stream's future forwards its request
//! ([`Handler`]) and then sends the response, within the stream's window.
//!
//! A client that resets a stream before its response drops that stream's future,
//! which resets the upstream stream in turn. So does a request body that stalls
//! ([`super::stall`]) while the response does not move either: the client gets
//! 408 if no response had begun, and the stream is reset. A protocol error ends the connection
//! with the GOAWAY `h2` chose; draining, or no stream open for the idle timeout,
//! sends GOAWAY and lets current streams finish.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, DATE};
use http::{HeaderValue, Request, Response};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::drain;

use super::body::{ProxyBody, ReceivedBody};
use super::date;
use super::stall::{BodyTimeout, Moving, Watched};
use super::stream::{Pipe, RecvBody};
use super::Handler;

/// hyper's server defaults, which the proxy used before it drove `h2` itself.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUFFER_SIZE: usize = 400 * 1024;
const MAX_CONCURRENT_STREAMS: u32 = 200;
/// Streams a misbehaving client may make the proxy reset before the connection
/// is dropped.
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// Serves the streams of one HTTP/2 connection until it closes; on the drain
/// signal, or after `idle` without an open stream, sends GOAWAY and serves the
/// streams already open to their end.
pub async fn serve<I>(
    io: I,
    handler: Arc<Handler>,
    timeouts: &BodyTimeout,
    idle: Duration,
    drain: &mut drain::Watch,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER_SIZE)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
        .handshake::<_, Bytes>(io);
    let mut connection = match handshake.await {
        Ok(connection) => connection,
        Err(error) => {
            tracing::debug!(%error, "downstream h2 handshake failed");
            return;
        }
    };
    let mut streams = FuturesUnordered::new();
    let mut signaled = pin!(drain.signaled_on_own_wake());
    let mut draining = false;
    // Armed while no stream is open; reset (one clock reading) only when the
    // last open stream ends, not per request.
    let mut idle_timer = pin!(tokio::time::sleep(idle));
    poll_fn(|cx| {
        loop {
            // Every stream that is ready runs before the connection is polled
            // again, and that poll writes what they all queued: one write for a
            // batch of responses, where polling the connection after each stream
            // wrote each response on its own.
            let mut progressed = false;
            loop {
                match connection.poll_accept(cx) {
                    Poll::Ready(Some(Ok((request, respond)))) => {
                        streams.push(stream(handler.clone(), timeouts, request, respond));
                        progressed = true;
                    }
                    Poll::Ready(Some(Err(error))) => {
                        tracing::debug!(%error, "downstream h2 connection failed");
                        return Poll::Ready(());
                    }
                    // Closed (after a GOAWAY, once no stream was left open).
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => break,
                }
            }
            let mut ended = false;
            while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {
                ended = true;
            }
            if ended && streams.is_empty() {
                if let Some(at) = tokio::time::Instant::now().checked_add(idle) {
                    idle_timer.as_mut().reset(at);
                }
            }
            if !progressed && !ended {
                break;
            }
        }
        if draining {
            return Poll::Pending;
        }
        let idle_passed = streams.is_empty() && idle_timer.as_mut().poll(cx).is_ready();
        if idle_passed {
            tracing::debug!("downstream h2 connection idle; closing it");
        }
        if idle_passed || signaled.as_mut().poll(cx).is_ready() {
            draining = true;
            connection.graceful_shutdown();
            // The GOAWAY is written by the next poll of the connection.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    })
    .await
}

/// How waiting for a stream's response ended.
// A local value matched at once: boxing the response would cost an allocation
// per stream.
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Response(Response<ProxyBody>),
    /// The client reset the stream.
    Reset,
    /// The request body stalled.
    Stalled,
}

/// One stream: the request forwarded, then the response sent.
async fn stream(
    handler: Arc<Handler>,
    timeouts: &BodyTimeout,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let request = request.map(RecvBody::new);
    let stall = timeouts.watch(&request);
    let grpc = request
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let request = request.map(|body| match &stall {
        Some(stall) => ReceivedBody::Http2Downstream(Watched::new(body, stall.clone())),
        None => ReceivedBody::Http2(body),
    });
    let mut timer = stall.as_ref().map(|stall| timeouts.timer(stall, true));
    // While the request is forwarded, a reset from the client ends the stream
    // (and, by dropping the forwarding, the upstream stream); so does a stall.
    let outcome = {
        let mut handled = pin!(handler.handle(request));
        poll_fn(|cx| {
            if let Poll::Ready(response) = handled.as_mut().poll(cx) {
                return Poll::Ready(Outcome::Response(response));
            }
            if let Some(timer) = &mut timer {
                if timer.poll_stalled(cx).is_ready() {
                    return Poll::Ready(Outcome::Stalled);
                }
            }
            match respond.poll_reset(cx) {
                Poll::Ready(_) => Poll::Ready(Outcome::Reset),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    };
    let response = match (outcome, &stall) {
        (Outcome::Response(response), _) => response,
        (Outcome::Stalled, Some(stall)) => {
            // The 408's head alone. Dropping the stream's handles then resets it
            // with NO_ERROR once the head is out, which tells the client to stop
            // sending (RFC 9113 section 8.1); an explicit reset now would discard
            // the head still queued.
            let (head, _) = timeouts.abandon(stall, grpc).into_parts();
            let mut head = Response::from_parts(head, ());
            head.headers_mut().entry(DATE).or_insert_with(date::now);
            let _ = respond.send_response(head, true);
            return;
        }
        _ => return,
    };
    let (head, body) = response.into_parts();
    let mut head = Response::from_parts(head, ());
    head.headers_mut().entry(DATE).or_insert_with(date::now);
    let end = body.is_end_stream();
    if !end {
        if let Some(length) = body.size_hint().exact() {
            head.headers_mut()
                .entry(CONTENT_LENGTH)
                .or_insert_with(|| HeaderValue::from(length));
        }
    }
    let sent = match respond.send_response(head, end) {
        Ok(sent) => sent,
        Err(error) => {
            tracing::debug!(%error, "response head not sent downstream");
            return;
        }
    };
    if !end {
        let body = Moving {
            body,
            stall: stall.clone(),
        };
        let mut pipe = Pipe::new(body, sent);
        let stalled = poll_fn(|cx| {
            if let Some(timer) = &mut timer {
                if timer.poll_stalled(cx).is_ready() {
                    return Poll::Ready(true);
                }
            }
            pipe.poll_send(cx).map(|()| false)
        })
        .await;
        if let (true, Some(stall)) = (stalled, &stall) {
            timeouts.abandon_responding(stall);
            pipe.reset(Reason::CANCEL);
        }
    }
}
