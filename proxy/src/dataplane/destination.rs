//! A destination: where one kind of traffic goes (a service port, the local app, or
//! a passthrough address), with the protocol to speak upstream, its metrics, and
//! the current set of endpoints to balance over.
//!
//! The endpoint set is swapped whole when a snapshot changes it; a connection or a
//! request that loaded the old set keeps using it (and its endpoints) until it is
//! done, and the next load sees the new one.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use weft_proto::model::Protocol;

use crate::balance::Picker;
use crate::metrics::ServiceMetrics;
use crate::snapshot::Policy;

use super::endpoint::Endpoint;

#[derive(Debug)]
pub struct Destination {
    /// What upstream endpoints speak.
    pub protocol: Protocol,
    pub metrics: Arc<ServiceMetrics>,
    set: ArcSwap<EndpointSet>,
}

/// The endpoints a destination currently balances over, and how.
#[derive(Debug)]
pub struct EndpointSet {
    pub endpoints: Vec<Arc<Endpoint>>,
    pub picker: Picker,
}

impl EndpointSet {
    pub fn new(policy: Policy, endpoints: Vec<Arc<Endpoint>>, cursor: usize) -> EndpointSet {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight()).collect();
        EndpointSet {
            picker: Picker::new(policy, &weights, cursor),
            endpoints,
        }
    }
}

impl Destination {
    pub fn new(protocol: Protocol, metrics: Arc<ServiceMetrics>, set: EndpointSet) -> Arc<Self> {
        Arc::new(Destination {
            protocol,
            metrics,
            set: ArcSwap::from_pointee(set),
        })
    }

    /// A destination with one fixed address: the local app, or a passthrough.
    pub fn fixed(
        protocol: Protocol,
        metrics: Arc<ServiceMetrics>,
        address: SocketAddr,
        pool_max_idle: usize,
    ) -> Arc<Self> {
        let endpoint = Endpoint::new(address, None, 1, pool_max_idle);
        Self::new(
            protocol,
            metrics,
            EndpointSet::new(Policy::RoundRobin, vec![endpoint], 0),
        )
    }

    pub fn endpoints(&self) -> Guard<Arc<EndpointSet>> {
        self.set.load()
    }

    pub fn replace(&self, set: EndpointSet) {
        self.set.store(Arc::new(set));
    }
}
