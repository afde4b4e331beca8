//! The downstream side of an HTTP/2 connection (h2c, or h2 inside mTLS) on the
//! `h2` crate. Every stream is a future polled by the connection's own task,
//! alongside the connection itself: no task is spawned per stream, unlike hyper's
//! server, which spawns one for each. A stream's future forwards its request
//! ([`Handler`]) and then sends the response, within the stream's window.
//!
//! A client that resets a stream before its response drops that stream's future,
//! which resets the upstream stream in turn. A protocol error ends the connection
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
use h2::RecvStream;
use http::header::{CONTENT_LENGTH, DATE};
use http::{HeaderValue, Request, Response};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::drain;

use super::body::ReceivedBody;
use super::date;
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
pub async fn serve<I>(io: I, handler: Arc<Handler>, idle: Duration, drain: &mut drain::Watch)
where
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
                        streams.push(stream(handler.clone(), request, respond));
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

/// One stream: the request forwarded, then the response sent.
async fn stream(
    handler: Arc<Handler>,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let request = request.map(|body| ReceivedBody::Http2(RecvBody::new(body)));
    let mut handled = pin!(handler.handle(request));
    // While the request is forwarded, a reset from the client ends the stream
    // (and, by dropping the forwarding, the upstream stream).
    let response = poll_fn(|cx| {
        if let Poll::Ready(response) = handled.as_mut().poll(cx) {
            return Poll::Ready(Some(response));
        }
        match respond.poll_reset(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    let Some(response) = response else {
        return;
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
        let mut pipe = Pipe::new(body, sent);
        poll_fn(|cx| pipe.poll_send(cx)).await;
    }
}
