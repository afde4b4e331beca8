//! The data path: every listener that carries application traffic, and what happens
//! to a connection from accept to close.
//!
//! # Layout (the request path, in order)
//! - [`Listeners`] (here): binds the outbound, inbound and explicit `--upstream`
//!   listeners and runs their accept loops until the drain signal, within the
//!   bound on open connections ([`admission`]).
//! - [`outbound`] / [`inbound`]: decide where an accepted connection goes (original
//!   destination, virtual IP, host name, local app) and with which protocol.
//! - [`authz`]: on the inbound side, whether the caller's identity may reach the
//!   local app (per HTTP request, per TCP connection).
//! - [`detect`]: peeks at the first bytes when the protocol is not declared.
//! - [`tcp`]: opaque connections, one balancing decision each, copied both ways.
//! - [`http`]: HTTP/1 and HTTP/2 (gRPC), one balancing decision per request over
//!   pooled upstream connections.
//! - [`destination`]: a service port's endpoint set, and how a pick skips endpoints
//!   out of rotation; [`probe`] brings back an endpoint that could not be reached.
//! - [`registry`]: turns each snapshot into [`destination::Destination`]s, keeping
//!   endpoint state (latency, pools) across snapshot swaps.
//! - [`error`]: the typed forwarding errors and the one table turning them into a
//!   status and a metric label.
//!
//! Everything here runs on the worker runtime; nothing blocks, and the only locks
//! (connection pools, the inbound cache) are held for a push or a pop.

pub mod admission;
pub mod authz;
pub mod destination;
pub mod detect;
pub mod endpoint;
pub mod error;
pub mod http;
pub mod inbound;
pub mod io;
pub mod outbound;
pub mod probe;
pub mod registry;
pub mod splice;
pub mod tcp;

use std::io as stdio;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::config::Upstream;
use crate::drain;
use crate::metrics::Direction;
use crate::state::Shared;

use self::admission::Admission;
use self::registry::Registry;

/// Timeouts and limits of the data path. The defaults are what the binary uses;
/// tests shorten some to observe them.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long to wait for the first bytes of a connection whose protocol is not
    /// declared before treating it as opaque TCP (server-first protocols send
    /// nothing until the server speaks).
    pub detect_timeout: Duration,
    /// An idle pooled HTTP/1 connection to an endpoint is closed after this long.
    pub pool_idle_timeout: Duration,
    /// An idle downstream HTTP/1 keep-alive connection is closed after this long
    /// (a service's `timeouts.idle` takes over on a listener for that service).
    pub downstream_idle_timeout: Duration,
    /// At most this many idle HTTP/1 connections are kept per endpoint.
    pub pool_max_idle: usize,
    /// After the drain signal, opaque TCP connections get this long to finish
    /// before they are closed (HTTP connections close after their current request).
    pub drain_grace: Duration,
    /// A request whose client sends no body bytes for this long is abandoned
    /// (see [`http`]); nginx's `client_body_timeout` default.
    pub request_body_timeout: Duration,
    /// Downstream connections open at once over every listener; one more is
    /// closed as soon as it is accepted ([`admission`]).
    pub max_connections: usize,
    /// Whether responses name the route rule and backend service that served
    /// them (`--debug-headers`).
    pub debug_headers: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            detect_timeout: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(30),
            downstream_idle_timeout: Duration::from_secs(60),
            pool_max_idle: 256,
            drain_grace: Duration::from_secs(5),
            request_body_timeout: Duration::from_secs(60),
            max_connections: 100_000,
            debug_headers: false,
        }
    }
}

/// Reads where a redirected connection was going; `ErrorKind::NotFound` (ENOENT)
/// means it was not redirected. The kernel's answer by default; tests substitute a
/// table because they run without iptables.
pub type OriginalDst = Arc<dyn Fn(&TcpStream) -> stdio::Result<SocketAddr> + Send + Sync>;

/// What every connection handler needs.
pub struct Context {
    pub shared: Arc<Shared>,
    pub registry: Arc<Registry>,
    pub settings: Settings,
    pub original_dst: OriginalDst,
    /// The mTLS configs of the proxy's current certificate.
    pub tls: Arc<crate::tls::Tls>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({what}): {source}")]
pub struct BindError {
    pub what: String,
    pub addr: SocketAddr,
    pub source: stdio::Error,
}

/// The bound data-path listeners. Binding is separate from serving so that a test
/// (or a caller with port 0) can read the addresses before traffic starts.
pub struct Listeners {
    outbound: TcpListener,
    inbound: TcpListener,
    upstreams: Vec<(Upstream, TcpListener)>,
    settings: Settings,
    original_dst: OriginalDst,
}

impl Listeners {
    pub async fn bind(
        outbound: &SocketAddr,
        inbound: &SocketAddr,
        upstreams: &[Upstream],
    ) -> Result<Listeners, BindError> {
        let bind = |what: String, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| BindError { what, addr, source })
        };
        let outbound = bind("outbound".into(), *outbound).await?;
        let inbound = bind("inbound".into(), *inbound).await?;
        let mut bound = Vec::with_capacity(upstreams.len());
        for upstream in upstreams {
            let what = format!("upstream {}", upstream.service);
            bound.push((upstream.clone(), bind(what, upstream.listen).await?));
        }
        Ok(Listeners {
            outbound,
            inbound,
            upstreams: bound,
            settings: Settings::default(),
            original_dst: Arc::new(crate::capture::original_dst),
        })
    }

    pub fn with_settings(mut self, settings: Settings) -> Listeners {
        self.settings = settings;
        self
    }

    pub fn with_original_dst(mut self, original_dst: OriginalDst) -> Listeners {
        self.original_dst = original_dst;
        self
    }

    pub fn outbound_addr(&self) -> stdio::Result<SocketAddr> {
        self.outbound.local_addr()
    }

    pub fn inbound_addr(&self) -> stdio::Result<SocketAddr> {
        self.inbound.local_addr()
    }

    /// The address of each explicit `--upstream` listener, in configuration order.
    pub fn upstream_addrs(&self) -> stdio::Result<Vec<SocketAddr>> {
        self.upstreams.iter().map(|(_, l)| l.local_addr()).collect()
    }

    /// Runs every accept loop until the drain signal; returns once they stopped
    /// accepting (connections in flight keep their own drain watches).
    pub async fn serve(self, shared: Arc<Shared>, drain: drain::Watch) -> anyhow::Result<()> {
        let registry = Registry::new(shared.clone(), self.settings.pool_max_idle);
        let admission = Arc::new(Admission::new(self.settings.max_connections));
        let cx = Arc::new(Context {
            shared,
            registry: registry.clone(),
            settings: self.settings,
            original_dst: self.original_dst,
            tls: Arc::default(),
        });
        tokio::spawn(registry::maintain(cx.clone(), drain.clone()));
        tokio::spawn(crate::tls::maintain(
            cx.tls.clone(),
            cx.shared.identity.subscribe(),
            drain.clone(),
        ));
        for addr in [self.outbound.local_addr()?, self.inbound.local_addr()?] {
            tracing::debug!(%addr, "data path listening");
        }
        let mut loops = tokio::task::JoinSet::new();
        let outbound = Gate::new(&admission, Direction::Outbound);
        let inbound = Gate::new(&admission, Direction::Inbound);
        loops.spawn(accept_loop(
            self.outbound,
            outbound.clone(),
            drain.clone(),
            {
                let cx = cx.clone();
                move |stream, drain| outbound::accept(cx.clone(), stream, drain)
            },
        ));
        loops.spawn(accept_loop(self.inbound, inbound, drain.clone(), {
            let cx = cx.clone();
            move |stream, drain| inbound::accept(cx.clone(), stream, drain)
        }));
        for (upstream, listener) in self.upstreams {
            let cx = cx.clone();
            let upstream = Arc::new(upstream);
            loops.spawn(accept_loop(
                listener,
                outbound.clone(),
                drain.clone(),
                move |stream, drain| {
                    outbound::accept_explicit(cx.clone(), upstream.clone(), stream, drain)
                },
            ));
        }
        while loops.join_next().await.is_some() {}
        Ok(())
    }
}

/// The admission of one accept loop, with the direction its refusals count in.
#[derive(Clone)]
struct Gate {
    admission: Arc<Admission>,
    direction: Direction,
}

impl Gate {
    fn new(admission: &Arc<Admission>, direction: Direction) -> Gate {
        Gate {
            admission: admission.clone(),
            direction,
        }
    }
}

/// Accepts until the drain signal, handing each connection admitted by `gate`
/// to its own task, which holds the admission until the connection ends.
async fn accept_loop<F, Fut>(listener: TcpListener, gate: Gate, mut drain: drain::Watch, handle: F)
where
    F: Fn(TcpStream, drain::Watch) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = drain.signaled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(admitted) = gate.admission.admit(gate.direction) else {
                    tracing::debug!(%peer, "connection limit reached; closing");
                    continue;
                };
                // Small writes (HTTP heads, RPCs) must not wait for Nagle.
                let _ = stream.set_nodelay(true);
                let served = handle(stream, drain.clone());
                tokio::spawn(async move {
                    served.await;
                    drop(admitted);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
