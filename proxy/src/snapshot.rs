//! The proxy's view of the mesh: an immutable snapshot, swapped whole.
//!
//! The discovery client builds a new [`Snapshot`] from every accepted push and publishes
//! it on a `watch` channel; the data path reads the current one without locks
//! (DESIGN.md decision 3). Everything here is validated: proto types stop at the
//! discovery client.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use weft_proto::model::route::ServiceRoutes;
use weft_proto::model::{
    host_key, AuthorizationPolicy, Directory, Endpoints, GrpcRoute, HttpRoute, ResourceName,
    Service,
};
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
pub use weft_proto::model::Target;

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
    /// The routes attached to each service, compiled in precedence order for
    /// selection; a service no route attaches to has no entry, so the common case
    /// costs one lookup that finds nothing.
    pub routes: HashMap<ResourceName, Arc<ServiceRoutes>>,
    /// Every accepted route, by name, as sent.
    pub http_routes: BTreeMap<ResourceName, Arc<RouteView<HttpRoute>>>,
    pub grpc_routes: BTreeMap<ResourceName, Arc<RouteView<GrpcRoute>>>,
}

/// A route (HTTPRoute or GRPCRoute) as accepted from the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteView<R> {
    /// Shared with the compiled tables of every service it attaches to.
    pub route: Arc<R>,
    pub version: u64,
}

/// The routes a snapshot carries: as accepted, and compiled per service.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    pub http: BTreeMap<ResourceName, Arc<RouteView<HttpRoute>>>,
    pub grpc: BTreeMap<ResourceName, Arc<RouteView<GrpcRoute>>>,
    pub compiled: HashMap<ResourceName, Arc<ServiceRoutes>>,
}

impl Routes {
    /// Compiles the tables of every service some route attaches to. Regular
    /// expressions were compiled when each route was accepted; this only orders
    /// the rules, once per change of a service or a route rather than per push.
    pub fn compile(&mut self, services: &BTreeMap<ResourceName, Arc<ServiceView>>) {
        self.compiled = ServiceRoutes::compile_all(
            services.values().map(|view| &view.service),
            self.http.values().map(|view| &view.route),
            self.grpc.values().map(|view| &view.route),
        )
        .into_iter()
        .map(|(name, routes)| (name, Arc::new(routes)))
        .collect();
    }
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
        let directory = Directory::new(services.values().map(|view| &view.service));
        Snapshot {
            services,
            endpoints,
            by_virtual_address: directory.by_virtual_address,
            by_hostname: directory.by_hostname,
            policies: BTreeMap::new(),
            routes: HashMap::new(),
            http_routes: BTreeMap::new(),
            grpc_routes: BTreeMap::new(),
        }
    }

    pub fn with_policies(mut self, policies: BTreeMap<ResourceName, Arc<PolicyView>>) -> Snapshot {
        self.policies = policies;
        self
    }

    pub fn with_routes(mut self, routes: Routes) -> Snapshot {
        self.http_routes = routes.http;
        self.grpc_routes = routes.grpc;
        self.routes = routes.compiled;
        self
    }

    /// The compiled routes of a service; `None` (the common case) when no route
    /// attaches to it.
    pub fn routes_of(&self, service: &ResourceName) -> Option<&Arc<ServiceRoutes>> {
        self.routes.get(service)
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
        let http_routes = self
            .http_routes
            .iter()
            .map(|(n, v)| ((Kind::HttpRoute, n.to_string()), v.version));
        let grpc_routes = self
            .grpc_routes
            .iter()
            .map(|(n, v)| ((Kind::GrpcRoute, n.to_string()), v.version));
        services
            .chain(endpoints)
            .chain(policies)
            .chain(http_routes)
            .chain(grpc_routes)
            .collect()
    }

    /// The service a host name (an HTTP Host or :authority, possibly with a port) names.
    pub fn service_for_host(&self, authority: &str) -> Option<&Arc<ServiceView>> {
        self.by_hostname
            .get(&host_key(authority))
            .and_then(|name| self.services.get(name))
    }
}
