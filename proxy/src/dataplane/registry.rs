//! From snapshot to destinations: the routing tables the data path reads, rebuilt
//! whenever the discovery client publishes a snapshot.
//!
//! State that must survive a swap is carried over: a destination (and so every
//! connection holding it) is updated in place when its service port keeps its
//! protocol; an endpoint (latency estimate, pooled connections) is reused when its
//! service and address stay; metric handles are made once per service. Only the
//! maintenance task writes; connections read the current [`Routes`] lock-free.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use weft_proto::model::route::{Route, RouteRule};
use weft_proto::model::{
    Health, Locality, MtlsMode, Protocol, ResourceName, Sampling, Service, SpiffeId,
};

use crate::drain;
use crate::local::{self, Local};
use crate::metrics::{AuthzMetrics, Direction, EndpointGauges, Peer, PeerSlots, ServiceMetrics};
use crate::resilience::locality;
use crate::snapshot::{Snapshot, Target};
use crate::state::{EndpointStates, Shared};

use super::authz::{Caller, Denied, InboundPolicies};
use super::destination::{self, Destination, EndpointSet, Tier};
use super::endpoint::Endpoint;
use super::http::routing::Routing;
use super::Context;

/// The outbound routing tables of one snapshot.
#[derive(Default)]
pub struct Routes {
    pub snapshot: Arc<Snapshot>,
    /// Every service port.
    pub by_target: HashMap<Target, Arc<Destination>>,
    /// Endpoint state by service and address, for reuse by the next snapshot.
    endpoints: HashMap<(ResourceName, SocketAddr, Option<SpiffeId>), Arc<Endpoint>>,
    /// The local workload: the services the app serves, by port.
    pub local: Arc<Local>,
    /// The authorization policies protecting the local workload.
    pub inbound_policies: InboundPolicies,
    /// Metric handles (with the `route` label) by route, then by the backend service
    /// it sends to: looked up by reference, so a routed request allocates nothing.
    pub route_metrics: RouteMetrics,
    /// Per-route state of the rules' filters (counters, rate-limit buckets),
    /// carried over from the previous tables where unchanged.
    pub filters: super::http::filters::State,
    /// The tracing of each service that traces, by name.
    pub tracers: crate::trace::tracers::Tracers,
    /// The access log share of each service that logs, by name (none at all
    /// under `--no-access-log`).
    pub access_logs: HashMap<String, Sampling>,
}

pub type RouteMetrics = HashMap<ResourceName, HashMap<ResourceName, Arc<ServiceMetrics>>>;

/// Sets what `destination` records of the requests of `service` (its name, as the
/// metrics label it) besides metrics: its tracer and its access log share.
fn set_telemetry(destination: &Destination, routes: &Routes, service: &str) {
    destination.set_tracer(routes.tracers.get(service).cloned());
    destination.set_access_log(routes.access_logs.get(service).copied());
}

/// Each service's access log share, unless `enabled` is false (`--no-access-log`).
fn access_logs(snapshot: &Snapshot, enabled: bool) -> HashMap<String, Sampling> {
    if !enabled {
        return HashMap::new();
    }
    let logged = snapshot.services.iter().filter_map(|(name, view)| {
        let log = view.service.telemetry.access_log?;
        Some((name.to_string(), log.sampling))
    });
    logged.collect()
}

/// The handles of every (route, backend service) pair the snapshot's routes can
/// send to; a rule without backends sends to its parents.
fn route_metrics(snapshot: &Snapshot) -> RouteMetrics {
    fn add<R: RouteRule>(out: &mut RouteMetrics, route: &Route<R>) {
        let by_backend = out.entry(route.name.clone()).or_default();
        let parents = route.parents.iter().map(|p| &p.service);
        let backends = route.rules.iter().flat_map(|r| r.backends().iter());
        for service in parents.chain(backends.map(|b| &b.service)) {
            by_backend.entry(service.clone()).or_insert_with(|| {
                Arc::new(ServiceMetrics::routed(
                    service.to_string(),
                    route.name.to_string(),
                ))
            });
        }
    }
    let mut out = HashMap::new();
    for view in snapshot.http_routes.values() {
        add(&mut out, &view.route);
    }
    for view in snapshot.grpc_routes.values() {
        add(&mut out, &view.route);
    }
    out
}

impl Routes {
    /// The destination a captured connection to a virtual IP and port goes to.
    pub fn by_virtual_address(&self, addr: &SocketAddr) -> Option<&Arc<Destination>> {
        let target = self.snapshot.by_virtual_address.get(addr)?;
        self.by_target.get(target)
    }

    /// The destination an HTTP request goes to by its Host or `:authority`. The
    /// port is the authority's, else `default_port` (the port the client dialled),
    /// and when neither is one of the service's ports, its first HTTP port.
    pub fn by_authority(
        &self,
        authority: &str,
        default_port: Option<u16>,
    ) -> Option<&Arc<Destination>> {
        let view = self.snapshot.service_for_host(authority)?;
        let service = &view.service;
        let port = service.port_for_authority(authority, default_port)?;
        self.by_target.get(&Target {
            service: service.name.clone(),
            port,
        })
    }

    /// The destination of an explicit `--upstream SERVICE[:PORT]` listener; without
    /// a port, the service's only (or first) port.
    pub fn by_service(&self, name: &ResourceName, port: Option<u16>) -> Option<&Arc<Destination>> {
        let view = self.snapshot.services.get(name)?;
        let port = port.or_else(|| view.service.ports.first().map(|p| p.port))?;
        self.by_target.get(&Target {
            service: name.clone(),
            port,
        })
    }

    fn all_destinations(&self) -> impl Iterator<Item = &Arc<Destination>> {
        self.by_target.values()
    }
}

/// Direction, service, and for inbound handles whether the caller came over mTLS.
type MetricsKey = (Direction, String, Option<bool>);

pub struct Registry {
    shared: Arc<Shared>,
    /// Bounds the idle HTTP/1 pool of every endpoint made here.
    pool_max_idle: usize,
    current: ArcSwap<Routes>,
    // std Mutexes below: cold paths (a snapshot, a new inbound port), never held
    // across an await.
    /// Outbound handles by service; inbound ones by service and whether the
    /// connection came in over mTLS (the `tls` label).
    metrics: Mutex<HashMap<MetricsKey, Arc<ServiceMetrics>>>,
    /// The peer identities each service has met, by direction: the bounded
    /// `dst_identity` and `client_identity` label values (see `metrics::peers`).
    peer_slots: Mutex<HashMap<(Direction, String), PeerSlots>>,
    gauges: Mutex<HashMap<ResourceName, EndpointGauges>>,
    authz_metrics: Mutex<HashMap<ResourceName, Arc<AuthzMetrics>>>,
    /// Inbound destinations by local address, protocol, mTLS and local service
    /// (the metrics label), made on first use so their connection pools (and
    /// metric handles) are shared by every inbound connection of the same kind.
    /// Locked before `metrics` when both are.
    inbound: Mutex<HashMap<InboundKey, Arc<Destination>>>,
}

type InboundKey = (SocketAddr, Protocol, bool, Arc<str>);

impl Registry {
    pub fn new(shared: Arc<Shared>, pool_max_idle: usize) -> Arc<Registry> {
        let registry = Arc::new(Registry {
            shared,
            pool_max_idle,
            current: ArcSwap::from_pointee(Routes::default()),
            metrics: Mutex::new(HashMap::new()),
            peer_slots: Mutex::new(HashMap::new()),
            gauges: Mutex::new(HashMap::new()),
            authz_metrics: Mutex::new(HashMap::new()),
            inbound: Mutex::new(HashMap::new()),
        });
        let snapshot = registry.shared.snapshot.borrow().clone();
        registry.apply(snapshot);
        let states: Arc<dyn EndpointStates> = registry.clone();
        let _ = registry.shared.endpoint_states.set(Arc::downgrade(&states));
        registry
    }

    pub fn routes(&self) -> arc_swap::Guard<Arc<Routes>> {
        self.current.load()
    }

    /// The metric handles of a service (`""`: traffic that belongs to none).
    pub fn metrics(&self, direction: Direction, service: &str) -> Arc<ServiceMetrics> {
        let mut cache = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((direction, service.to_owned(), None))
            .or_insert_with(|| Arc::new(ServiceMetrics::new(direction, service.to_owned())))
            .clone()
    }

    /// The label slot of `identity` among the peers of `service` in `direction`:
    /// once per endpoint (outbound) or mTLS connection (inbound), never per request.
    pub fn peer(&self, direction: Direction, service: &str, identity: &SpiffeId) -> Peer {
        let mut slots = self.peer_slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .entry((direction, service.to_owned()))
            .or_insert_with(|| PeerSlots::new(direction, service))
            .slot(&identity.to_string())
    }

    /// The inbound metric handles of the local service, for connections that came
    /// in over mTLS (`tls`) or not.
    fn inbound_metrics(&self, service: &str, tls: bool) -> Arc<ServiceMetrics> {
        let mut cache = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((Direction::Inbound, service.to_owned(), Some(tls)))
            .or_insert_with(|| Arc::new(ServiceMetrics::inbound(service.to_owned(), tls)))
            .clone()
    }

    /// The destination for inbound traffic to the local app at `address`; `tls`:
    /// whether the connection came in over mTLS; `port`: the workload port the
    /// client dialled, whose service labels the metrics.
    pub fn inbound(
        &self,
        address: SocketAddr,
        protocol: Protocol,
        tls: bool,
        port: u16,
    ) -> Arc<Destination> {
        let service = self.routes().local.port(port).service.clone();
        let mut cache = self.inbound.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((address, protocol, tls, service.clone()))
            .or_insert_with(|| {
                let metrics = self.inbound_metrics(&service, tls);
                let destination =
                    Destination::fixed(protocol, metrics, address, self.pool_max_idle);
                set_telemetry(&destination, &self.routes(), &service);
                destination
            })
            .clone()
    }

    /// The protocol the mesh declares for the local port a client dialled, if any.
    pub fn local_protocol(&self, port: u16) -> Option<Protocol> {
        self.routes().local.port(port).protocol
    }

    /// The mTLS mode of the local port a client dialled: its services' (the
    /// strictest), PERMISSIVE (the default) for a port no service owns or while
    /// the proxy does not know its service yet.
    pub fn local_mtls(&self, port: u16) -> MtlsMode {
        self.routes().local.port(port).mtls
    }

    /// Whether the authorization policies of the services owning the dialled port
    /// let `caller` through, as of the current snapshot (a policy change applies to
    /// the next request).
    pub fn authorize(&self, caller: &Caller) -> Result<(), Denied> {
        self.routes().inbound_policies.check(caller)
    }

    /// The local workload of a snapshot: declared by `--service`, else learned
    /// from the endpoints at `--workload-address`, else none.
    fn local_workload(&self, snapshot: &Snapshot) -> Local {
        let config = &self.shared.config;
        match (&config.workload, config.workload_address) {
            (Some(workload), _) => Local::declared(snapshot, &config.namespace, workload),
            (None, Some(address)) => local::membership(snapshot, address),
            (None, None) => Local::default(),
        }
    }

    /// Rebuilds the routing tables from a snapshot.
    pub fn apply(&self, snapshot: Arc<Snapshot>) {
        let old = self.current.load_full();
        let local = Arc::new(self.local_workload(&snapshot));
        let recorder = crate::trace::tracers::recorder(&self.shared.config, &local);
        let mut routes = Routes {
            tracers: crate::trace::tracers::build(&snapshot, &recorder, &self.shared.trace),
            access_logs: access_logs(&snapshot, self.shared.access_log.enabled),
            snapshot: snapshot.clone(),
            route_metrics: route_metrics(&snapshot),
            filters: super::http::filters::State::build(&snapshot, &old.filters),
            ..Routes::default()
        };
        let mut gauges = self.gauges.lock().unwrap_or_else(|e| e.into_inner());
        for (name, view) in &snapshot.services {
            let listed = snapshot
                .endpoints
                .get(name)
                .map(|e| e.endpoints.endpoints.as_slice())
                .unwrap_or_default();
            let healthy = listed
                .iter()
                .filter(|e| e.health == Health::Healthy)
                .count();
            let gauge = gauges
                .entry(name.clone())
                .or_insert_with(|| EndpointGauges::new(name.to_string()));
            gauge.healthy.set(healthy as f64);
            gauge.unhealthy.set((listed.len() - healthy) as f64);

            let metrics = self.metrics(Direction::Outbound, &name.to_string());
            let resilience = view.service.resilience.clone();
            let own = self.own_locality();
            for port in &view.service.ports {
                // (tier, endpoint), sorted nearest first below; `listed` counts every
                // endpoint of a tier, healthy or not, for the spill-over threshold.
                let mut endpoints = Vec::new();
                let mut listed_by_tier: HashMap<u8, usize> = HashMap::new();
                for e in listed {
                    if !serves(&view.service, &e.port_name, port.port) {
                        continue;
                    }
                    let tier = locality::tier(&own, &e.locality, &resilience.locality);
                    *listed_by_tier.entry(tier).or_insert(0) += 1;
                    if e.health != Health::Healthy {
                        continue;
                    }
                    // DISABLED: callers do not encrypt, whatever the endpoint holds.
                    let tls = e
                        .identity
                        .clone()
                        .filter(|_| view.service.mtls != MtlsMode::Disabled);
                    let key = (name.clone(), e.address, tls.clone());
                    let endpoint = match old.endpoints.get(&key) {
                        Some(existing) => {
                            existing.set_weight(e.weight);
                            existing.clone()
                        }
                        None => {
                            let peer = tls
                                .as_ref()
                                .map(|id| self.peer(Direction::Outbound, metrics.service(), id));
                            Endpoint::labelled(e.address, tls, peer, e.weight, self.pool_max_idle)
                        }
                    };
                    endpoint.set_connect_timeout(resilience.timeouts.connect);
                    routes.endpoints.insert(key, endpoint.clone());
                    endpoints.push((tier, endpoint));
                }
                endpoints.sort_by_key(|(tier, _)| *tier);
                let mut tiers: Vec<Tier> = Vec::new();
                for (i, (tier, _)) in endpoints.iter().enumerate() {
                    match tiers.last_mut() {
                        Some(last) if last.tier == *tier => last.end = i + 1,
                        _ => tiers.push(Tier {
                            tier: *tier,
                            end: i + 1,
                            listed: listed_by_tier.get(tier).copied().unwrap_or(0),
                        }),
                    }
                }
                let endpoints: Vec<_> = endpoints.into_iter().map(|(_, e)| e).collect();
                let target = Target {
                    service: name.clone(),
                    port: port.port,
                };
                let previous = old
                    .by_target
                    .get(&target)
                    .filter(|d| d.protocol == port.protocol);
                let cursor = previous.map(|d| d.endpoints().picker.cursor()).unwrap_or(0);
                let set =
                    EndpointSet::new(view.policy, endpoints, cursor, resilience.clone(), tiers);
                let destination = match previous {
                    Some(existing) => {
                        existing.replace(set);
                        existing.clone()
                    }
                    None => {
                        Destination::for_target(port.protocol, metrics.clone(), set, target.clone())
                    }
                };
                set_telemetry(&destination, &routes, metrics.service());
                routes.by_target.insert(target, destination);
            }
        }
        // Once every destination exists, each routed one resolves its rules'
        // backends to them, so that a request looks nothing up.
        let namespace = &self.shared.config.namespace;
        for (target, destination) in &routes.by_target {
            let routing = snapshot
                .routes_of(&target.service)
                .and_then(|service_routes| {
                    Routing::resolve(target, namespace, service_routes, &routes)
                });
            destination.set_routing(routing.map(Arc::new));
        }
        // A destination gone from the mesh fails fast for anyone still holding it.
        for (target, destination) in &old.by_target {
            if !routes.by_target.contains_key(target) {
                destination.replace(EndpointSet::flat(
                    crate::snapshot::Policy::RoundRobin,
                    Vec::new(),
                    0,
                    destination::unguarded(),
                ));
            }
        }
        for (name, gauge) in gauges.iter() {
            if !snapshot.services.contains_key(name) {
                gauge.healthy.set(0.0);
                gauge.unhealthy.set(0.0);
            }
        }
        let mut metrics = self.authz_metrics.lock().unwrap_or_else(|e| e.into_inner());
        routes.inbound_policies = InboundPolicies::build(&snapshot, &local, &mut metrics);
        drop(metrics);
        routes.local = local.clone();
        let routes = Arc::new(routes);
        self.current.store(routes.clone());
        // Inbound: each local service's tracing and access log, for the next
        // request, of connections already open too. After the swap, so that a
        // destination made meanwhile took the new settings already.
        for ((.., service), destination) in self
            .inbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            set_telemetry(destination, &routes, service);
        }
        // After the swap: what `/config_dump` shows is what connections now see.
        self.shared.local.send_replace(local);
        self.shared.applied.send_replace(snapshot);
    }

    /// Where this proxy runs: its workload's region and zone (none without one).
    fn own_locality(&self) -> Locality {
        self.shared
            .config
            .workload
            .as_ref()
            .map(|w| Locality {
                region: w.region.clone(),
                zone: w.zone.clone(),
            })
            .unwrap_or_default()
    }

    /// Closes idle pooled connections that outlived the idle timeout (the
    /// service's own, else the proxy's).
    fn sweep(&self, idle_timeout: std::time::Duration) {
        let routes = self.routes();
        for destination in routes.all_destinations() {
            let set = destination.endpoints();
            let timeout = set.policy.timeouts.idle.unwrap_or(idle_timeout);
            for endpoint in &set.endpoints {
                endpoint.clients.sweep(timeout);
            }
        }
        let inbound = self.inbound.lock().unwrap_or_else(|e| e.into_inner());
        for destination in inbound.values() {
            for endpoint in &destination.endpoints().endpoints {
                endpoint.clients.sweep(idle_timeout);
            }
        }
    }
}

impl Registry {
    /// Sets each service's gauges of endpoints out of rotation, ejected or
    /// unreachable (both end by time passing or by a probe, so the gauges are
    /// refreshed here rather than when they end).
    fn count_out_of_rotation(&self) {
        let now = crate::balance::now();
        let routes = self.routes();
        let mut by_service: HashMap<&str, (usize, usize)> = HashMap::new();
        for destination in routes.all_destinations() {
            let count = by_service
                .entry(destination.metrics.service())
                .or_insert((0, 0));
            count.0 = count.0.max(destination.ejected_count(now));
            count.1 = count.1.max(destination.unreachable_count());
        }
        let metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        for (service, (ejected, unreachable)) in by_service {
            if let Some(metrics) = metrics.get(&(Direction::Outbound, service.to_owned(), None)) {
                let resilience = metrics.resilience();
                resilience.ejected.set(ejected as f64);
                resilience.unreachable_now.set(unreachable as f64);
            }
        }
    }
}

impl EndpointStates for Registry {
    fn out_of_rotation(&self) -> BTreeMap<(String, String), &'static str> {
        let now = crate::balance::now();
        let routes = self.routes();
        let mut states = BTreeMap::new();
        for ((service, address, _), endpoint) in &routes.endpoints {
            let state = if endpoint.reachability.is_unreachable() {
                "unreachable"
            } else if endpoint.outlier.is_ejected(now) {
                "ejected"
            } else {
                continue;
            };
            states.insert((service.to_string(), address.to_string()), state);
        }
        states
    }
}

/// Whether an endpoint listed with `port_name` serves the service port `port`.
fn serves(service: &Service, port_name: &str, port: u16) -> bool {
    service
        .port_named(port_name)
        .is_some_and(|p| p.port == port)
}

/// Applies every new snapshot and sweeps idle pools, until the drain signal.
pub async fn maintain(cx: Arc<Context>, mut drain: drain::Watch) {
    let mut snapshots = cx.shared.snapshot.subscribe();
    // The registry was built from the snapshot current at startup; apply again in
    // case one was published between that and this subscription.
    let current = snapshots.borrow_and_update().clone();
    cx.registry.apply(current);
    let idle = cx.settings.pool_idle_timeout;
    // Often enough for a service whose idle timeout is shorter than the proxy's.
    let mut sweep = tokio::time::interval((idle / 2).min(std::time::Duration::from_secs(1)));
    loop {
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                let snapshot = snapshots.borrow_and_update().clone();
                cx.registry.apply(snapshot);
            }
            _ = sweep.tick() => {
                cx.registry.sweep(idle);
                cx.registry.count_out_of_rotation();
            }
            () = drain.signaled() => return,
        }
    }
}
