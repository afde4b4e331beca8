//! One endpoint as the data path sees it: its address, weight, load and its pooled
//! upstream connections.
//!
//! An `Endpoint` lives as long as some snapshot lists it (keyed by service and
//! address, see [`super::registry`]) or some request still uses it: a request holds
//! an `Arc<Endpoint>`, so removing the endpoint from the mesh lets in-flight work
//! finish on it while new requests already pick from the new set.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use weft_proto::model::SpiffeId;

use crate::balance::{self, Candidate, Load};
use crate::metrics::Peer;
use crate::resilience::outlier::Outlier;
use crate::resilience::reachability::Reachability;

use super::http::client::Clients;

#[derive(Debug)]
pub struct Endpoint {
    pub address: SocketAddr,
    /// The SPIFFE ID to verify when connecting with mTLS; `None` for plaintext (the
    /// endpoint has no identity or its service's mode is DISABLED). Part of the
    /// endpoint's key in the registry, so a change makes a new endpoint and pool.
    pub tls: Option<SpiffeId>,
    /// `weft_tls_connections_total` for this endpoint's identity, registered once
    /// here rather than looked up per connection.
    pub tls_connections: Option<metrics::Counter>,
    /// The `dst_identity` label slot of `tls` in its service's handles (see
    /// `metrics::peers`), so an answer from here indexes a table and looks nothing up.
    pub peer: Option<Peer>,
    /// Updated in place when a snapshot changes only the weight.
    weight: AtomicU32,
    pub load: Load,
    pub clients: Clients,
    /// This proxy's passive view of the endpoint's health.
    pub outlier: Outlier,
    /// Out of rotation while a connect to it fails (see [`super::probe`]).
    pub reachability: Reachability,
    /// Milliseconds; the service's connect timeout, updated in place like the weight.
    connect_timeout: AtomicU64,
}

impl Endpoint {
    pub fn new(
        address: SocketAddr,
        tls: Option<SpiffeId>,
        weight: u32,
        pool_max_idle: usize,
    ) -> Arc<Endpoint> {
        Endpoint::labelled(address, tls, None, weight, pool_max_idle)
    }

    /// An endpoint whose answers count under `peer`'s identity label.
    pub fn labelled(
        address: SocketAddr,
        tls: Option<SpiffeId>,
        peer: Option<Peer>,
        weight: u32,
        pool_max_idle: usize,
    ) -> Arc<Endpoint> {
        let tls_connections = tls.as_ref().map(|id| {
            metrics::counter!(
                "weft_tls_connections_total",
                "direction" => "outbound",
                "peer_identity" => id.to_string()
            )
        });
        Arc::new(Endpoint {
            address,
            tls,
            tls_connections,
            peer,
            weight: AtomicU32::new(weight.max(1)),
            load: Load::new(balance::now()),
            clients: Clients::new(pool_max_idle),
            outlier: Outlier::default(),
            reachability: Reachability::default(),
            connect_timeout: AtomicU64::new(1000),
        })
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout.load(Ordering::Relaxed))
    }

    pub fn set_connect_timeout(&self, timeout: Duration) {
        let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.connect_timeout.store(millis.max(1), Ordering::Relaxed);
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight.max(1), Ordering::Relaxed);
    }

    /// Whether new requests should pass this endpoint over: ejected by outlier
    /// detection, or unreachable when last tried.
    pub fn out_of_rotation(&self, now: u64) -> bool {
        self.reachability.is_unreachable() || self.outlier.is_ejected(now)
    }
}

impl Candidate for Arc<Endpoint> {
    fn weight(&self) -> u32 {
        Endpoint::weight(self)
    }
    fn load(&self) -> &Load {
        &self.load
    }
}

/// One request (or connection) counted as in flight on an endpoint until dropped;
/// [`InFlight::observe_at`] and [`InFlight::observe_failure_at`] feed its latency
/// to the balancer when the balancer reads latencies (usually through
/// [`super::destination::Destination::feedback`]).
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    /// When it began, in [`balance::now`] nanoseconds; moved on past the time it
    /// took to open a new connection (see [`InFlight::connected`]).
    started: AtomicU64,
    /// Whether the set's policy reads latencies (only `p2c_ewma` does; the others
    /// skip the estimate's update, an `exp` per response).
    measured: bool,
}

impl InFlight {
    /// `measured`: the set's [`balance::Picker::uses_latency`].
    pub fn begin(endpoint: Arc<Endpoint>, measured: bool) -> InFlight {
        Self::begin_at(endpoint, balance::now(), measured)
    }

    /// Begins at `started` ([`balance::now`] nanoseconds), a clock reading the
    /// caller already has.
    pub fn begin_at(endpoint: Arc<Endpoint>, started: u64, measured: bool) -> InFlight {
        endpoint.load.begin();
        InFlight {
            endpoint,
            started: AtomicU64::new(started),
            measured,
        }
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// A new connection was opened for this attempt: its latency counts from now.
    /// The balancer compares how fast endpoints answer; a connect (and a TLS
    /// handshake) happens once per connection, and counted in the first answer
    /// of a fresh endpoint it made that endpoint look many times slower than its
    /// warm peers, which then starved it for tens of seconds.
    pub fn connected(&self) {
        if self.measured {
            self.started.store(balance::now(), Ordering::Relaxed);
        }
    }

    fn elapsed_at(&self, now: u64) -> Duration {
        Duration::from_nanos(now.saturating_sub(self.started.load(Ordering::Relaxed)))
    }

    /// The response (or connection) arrived at `now` ([`balance::now`]
    /// nanoseconds): record how long it took.
    pub fn observe_at(&self, now: u64) {
        if self.measured {
            self.endpoint.load.observe(self.elapsed_at(now), now);
        }
    }

    /// The attempt failed at `now`: the balancer counts it as slow
    /// ([`balance::FAILURE_RTT`] at least).
    pub fn observe_failure_at(&self, now: u64) {
        if self.measured {
            self.endpoint
                .load
                .observe_failure(self.elapsed_at(now), now);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.load.end();
    }
}
