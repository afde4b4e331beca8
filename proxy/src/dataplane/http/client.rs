//! Upstream HTTP connections of one endpoint: a bounded pool of idle HTTP/1
//! keep-alive connections, and one shared multiplexed HTTP/2 connection.
//!
//! HTTP/1 checkout is last-in first-out, so traffic concentrates on the warmest
//! connections and the rest age out through the idle timeout. An HTTP/1 connection
//! returns to the pool only after its response was read to the end
//! ([`super::body`]); one that is closed or not ready when taken is dropped.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::super::endpoint::Endpoint;
use super::super::error::ForwardError;
use super::super::tcp::connect_endpoint;
use super::super::Context;
use super::body::RequestBody;
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
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

impl Http1Pool {
    /// The most recently used idle connection, if any is still open.
    pub fn checkout(&self) -> Option<http1::SendRequest<RequestBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(entry) = idle.pop() {
            if !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    pub fn checkin(&self, sender: http1::SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }

    /// Drops (and so closes) connections idle longer than `timeout`. The oldest are
    /// at the front, as checkins push to the back.
    fn sweep(&self, timeout: Duration) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let expired = idle
            .iter()
            .position(|e| e.since.elapsed() < timeout && !e.sender.is_closed())
            .unwrap_or(idle.len());
        idle.drain(..expired);
        idle.retain(|e| !e.sender.is_closed());
    }

    /// Opens a new connection; `upgrades` keeps it usable after a 101 response.
    /// `permit` counts the connection against its destination's limit for as long
    /// as the connection lives.
    pub async fn connect(
        cx: &Context,
        endpoint: &Endpoint,
        upgrades: bool,
        permit: Option<Permit>,
    ) -> Result<http1::SendRequest<RequestBody>, ForwardError> {
        let addr = endpoint.address;
        let stream = connect_endpoint(cx, endpoint, Alpn::Http1).await?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ForwardError::Handshake { addr, source })?;
        if upgrades {
            tokio::spawn(async move {
                if let Err(e) = connection.with_upgrades().await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
                drop(permit);
            });
        } else {
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
                drop(permit);
            });
        }
        Ok(sender)
    }
}

#[derive(Debug)]
pub struct Http2Connection {
    current: Mutex<Option<http2::SendRequest<RequestBody>>>,
    /// Serialises connecting, so a burst of first requests opens one connection.
    connecting: tokio::sync::Mutex<()>,
}

impl Http2Connection {
    /// A handle on the shared connection, connecting first when there is none.
    /// The shared connection if one is open.
    pub fn current(&self) -> Option<http2::SendRequest<RequestBody>> {
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
    ) -> Result<http2::SendRequest<RequestBody>, ForwardError> {
        let addr = endpoint.address;
        let _connecting = self.connecting.lock().await;
        if let Some(sender) = self.current() {
            return Ok(sender);
        }
        let stream = connect_endpoint(cx, endpoint, Alpn::H2).await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ForwardError::Handshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream h2 connection ended");
            }
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
