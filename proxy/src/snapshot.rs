//! The proxy's view of the mesh: an immutable snapshot, swapped whole.
//!
//! The discovery client builds a new [`Snapshot`] from every accepted push and publishes
//! it on a `watch` channel; the data path reads the current one without locks
//! (DESIGN.md decision 3). Everything here is validated: proto types stop at the
//! discovery client.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use weft_proto::model::{AuthorizationPolicy, Endpoints, ResourceName, Service};
use weft_proto::resource::Kind;

/// A load-balancing policy this proxy build implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Power of two choices over a peak-EWMA latency estimate (the default).
    P2cEwma,
    RoundRobin,
    Random,
    /// Weighted random, proportional to endpoint weights.
    Weighted,
}

impl Policy {
    pub const SUPPORTED: &'static str = "p2c_ewma, round_robin, random, weighted";

    pub fn from_name(name: &str) -> Option<Policy> {
        match name {
            "p2c_ewma" => Some(Policy::P2cEwma),
            "round_robin" => Some(Policy::RoundRobin),
            "random" => Some(Policy::Random),
            "weighted" => Some(Policy::Weighted),
            _ => None,
        }
    }
}

/// A service as this proxy will route it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceView {
    pub service: Service,
    pub policy: Policy,
    pub version: u64,
}

/// Where a captured or explicit connection goes: a service and one of its ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub service: ResourceName,
    pub port: u16,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub services: HashMap<ResourceName, Arc<ServiceView>>,
    pub endpoints: HashMap<ResourceName, Arc<EndpointsView>>,
    /// Virtual IP and port of every service port, for transparent capture.
    pub by_virtual_address: HashMap<SocketAddr, Target>,
    /// Lower-case host name (without port) to service, for HTTP authority routing.
    pub by_hostname: HashMap<String, ResourceName>,
    /// Every authorization policy, sorted by name (the order decisions are made in).
    pub policies: BTreeMap<ResourceName, Arc<PolicyView>>,
}

/// An authorization policy as accepted from the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyView {
    pub policy: AuthorizationPolicy,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointsView {
    pub endpoints: Endpoints,
    pub version: u64,
}

impl Snapshot {
    /// Builds a snapshot from validated resources, deriving the routing indexes.
    pub fn new(
        services: HashMap<ResourceName, Arc<ServiceView>>,
        endpoints: HashMap<ResourceName, Arc<EndpointsView>>,
    ) -> Snapshot {
        let mut by_virtual_address = HashMap::new();
        let mut by_hostname = HashMap::new();
        // Sorted, so that a conflict between two services resolves the same way on
        // every proxy (the first name wins).
        let mut names: Vec<&ResourceName> = services.keys().collect();
        names.sort();
        for name in names {
            let view = &services[name];
            for ip in &view.service.virtual_ips {
                for port in &view.service.ports {
                    by_virtual_address
                        .entry(SocketAddr::new(*ip, port.port))
                        .or_insert_with(|| Target {
                            service: name.clone(),
                            port: port.port,
                        });
                }
            }
            for host in &view.service.hostnames {
                by_hostname
                    .entry(host.clone())
                    .or_insert_with(|| name.clone());
            }
        }
        Snapshot {
            services,
            endpoints,
            by_virtual_address,
            by_hostname,
            policies: BTreeMap::new(),
        }
    }

    pub fn with_policies(mut self, policies: BTreeMap<ResourceName, Arc<PolicyView>>) -> Snapshot {
        self.policies = policies;
        self
    }

    /// Every resource's version, keyed by type and name (what a reconnecting proxy
    /// tells the control plane it holds).
    pub fn versions(&self) -> BTreeMap<(Kind, String), u64> {
        let services = self
            .services
            .iter()
            .map(|(n, v)| ((Kind::Service, n.to_string()), v.version));
        let endpoints = self
            .endpoints
            .iter()
            .map(|(n, v)| ((Kind::Endpoints, n.to_string()), v.version));
        let policies = self
            .policies
            .iter()
            .map(|(n, v)| ((Kind::AuthorizationPolicy, n.to_string()), v.version));
        services.chain(endpoints).chain(policies).collect()
    }

    /// The service a host name (an HTTP Host or :authority, possibly with a port) names.
    pub fn service_for_host(&self, authority: &str) -> Option<&Arc<ServiceView>> {
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.by_hostname
            .get(&host)
            .and_then(|name| self.services.get(name))
    }
}
