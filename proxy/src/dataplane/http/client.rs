//! Upstream HTTP connections of one endpoint: a bounded pool of idle HTTP/1
//! keep-alive connections, and one shared multiplexed HTTP/2 connection.
//!
//! HTTP/1 checkout is last-in first-out, so traffic concentrates on the warmest
//! connections and the rest age out through the idle timeout. An HTTP/1 connection
//! returns to the pool only after its response was read to the end
//! ([`super::h1client::ResponseBody`]); one that the peer closed (or that has
//! unasked bytes) when taken is dropped. Upgrade requests get a hyper connection
//! of their own, never pooled.
//!
//! The HTTP/2 connection is the `h2` crate's, not hyper's: each request drives its
//! own stream ([`super::stream`]) and one task per connection drives the rest.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::super::endpoint::Endpoint;
use super::super::error::ForwardError;
use super::super::tcp::connect_endpoint;
use super::super::Context;
use super::body::RequestBody;
use super::h1client::Connection;
use crate::resilience::breaker::Permit;
use crate::tls::Alpn;

#[derive(Debug)]
pub struct Clients {
    pub http1: Http1Pool,
    pub http2: Http2Connection,
}

impl Clients {
    pub fn new(max_idle: usize) -> Clients {
        Clients {
            http1: Http1Pool {
                idle: Mutex::new(Vec::new()),
                max_idle,
            },
            http2: Http2Connection {
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            },
        }
    }

    pub fn sweep(&self, idle_timeout: Duration) {
        self.http1.sweep(idle_timeout);
        self.http2.sweep();
    }
}

#[derive(Debug)]
pub struct Http1Pool {
    // A std Mutex: held for a push or a pop, never across an await.
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
}

#[derive(Debug)]
struct Idle {
    connection: Box<Connection>,
    since: Instant,
}

impl Http1Pool {
    /// The most recently used idle connection, if any is still open.
    pub fn checkout(&self) -> Option<Box<Connection>> {
        loop {
            let entry = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            let mut connection = entry.connection;
            if connection.usable() {
                return Some(connection);
            }
        }
    }

    pub fn checkin(&self, connection: Box<Connection>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(Idle {
                connection,
                since: Instant::now(),
            });
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }

    /// Drops (and so closes) connections idle longer than `timeout`, and those
    /// the peer closed. The oldest are at the front, as checkins push to the back.
    fn sweep(&self, timeout: Duration) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let expired = idle
            .iter()
            .position(|e| e.since.elapsed() < timeout)
            .unwrap_or(idle.len());
        idle.drain(..expired);
        idle.retain_mut(|e| e.connection.usable());
    }

    /// Opens a new connection. `permit` counts the connection against its
    /// destination's limit for as long as the connection lives.
    pub async fn connect(
        cx: &Context,
        endpoint: &Endpoint,
        permit: Option<Permit>,
    ) -> Result<Box<Connection>, ForwardError> {
        let stream = connect_endpoint(cx, endpoint, Alpn::Http1).await?;
        Ok(Connection::new(stream, permit))
    }

    /// Opens a connection for an upgrade request, on hyper's client, which hands
    /// the connection over after a 101 response.
    pub async fn connect_upgrade(
        cx: &Context,
        endpoint: &Endpoint,
        permit: Option<Permit>,
    ) -> Result<http1::SendRequest<RequestBody>, ForwardError> {
        let addr = endpoint.address;
        let stream = connect_endpoint(cx, endpoint, Alpn::Http1).await?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ForwardError::Handshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
            drop(permit);
        });
        Ok(sender)
    }
}

/// Flow-control windows and limits of an upstream HTTP/2 connection: hyper's
/// client defaults, which the proxy used before it drove `h2` itself. The `h2`
/// crate's own defaults (64 KiB windows) would cap a large body at one window per
/// round trip.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUFFER_SIZE: usize = 1024 * 1024;
/// Streams opened before the server's SETTINGS say how many it takes.
const INITIAL_MAX_SEND_STREAMS: usize = 100;
/// Streams a misbehaving server may make the proxy reset before the connection
/// is dropped.
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

#[derive(Debug)]
pub struct Http2Connection {
    current: Mutex<Option<Http2Sender>>,
    /// Serialises connecting, so a burst of first requests opens one connection.
    connecting: tokio::sync::Mutex<()>,
}

/// A handle on one upstream HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct Http2Sender {
    pub sender: h2::client::SendRequest<Bytes>,
    /// Set when the connection ended, or when it took no more streams (after a
    /// GOAWAY): `h2`'s handle cannot tell.
    closed: Arc<AtomicBool>,
}

impl Http2Sender {
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Marks the connection as taking no more requests, so that the next one
    /// connects anew.
    pub fn retire(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

impl Http2Connection {
    /// The shared connection if one is open.
    pub fn current(&self) -> Option<Http2Sender> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// Connects (once, however many requests ask at the same time); `permit` counts
    /// the connection against its destination's limit while it lives.
    pub async fn connect(
        &self,
        cx: &Context,
        endpoint: &Endpoint,
        permit: Option<Permit>,
    ) -> Result<Http2Sender, ForwardError> {
        let addr = endpoint.address;
        let _connecting = self.connecting.lock().await;
        if let Some(sender) = self.current() {
            return Ok(sender);
        }
        let stream = connect_endpoint(cx, endpoint, Alpn::H2).await?;
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME_SIZE)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .max_send_buffer_size(MAX_SEND_BUFFER_SIZE)
            .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
            .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
            .enable_push(false)
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(|source| ForwardError::Http2Handshake { addr, source })?;
        let sender = Http2Sender {
            sender,
            closed: Arc::new(AtomicBool::new(false)),
        };
        let closed = sender.closed.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream h2 connection ended");
            }
            closed.store(true, Ordering::Relaxed);
            drop(permit);
        });
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender.clone());
        Ok(sender)
    }

    fn sweep(&self) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|s| s.is_closed()) {
            *current = None;
        }
    }
}
