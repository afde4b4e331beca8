//! A destination: where one kind of traffic goes (a service port, the local app, or
//! a passthrough address), with the protocol to speak upstream, its metrics, and
//! the current set of endpoints to balance over.
//!
//! The endpoint set is swapped whole when a snapshot changes it; a connection or a
//! request that loaded the old set keeps using it (and its endpoints) until it is
//! done, and the next load sees the new one. What must outlive a swap (the retry
//! budget, the circuit-breaker counters) lives on the destination itself.
//!
//! Endpoints out of rotation (ejected by outlier detection, or unreachable when
//! last tried) are passed over by every policy. When none in rotation is left that
//! the request has not tried, it may still try one out of rotation (one may have
//! come back before its probe or ejection timer noticed), as Envoy's panic routing
//! does: a request is never refused for want of a healthy endpoint while the
//! control plane lists some.
//!
//! A service port's destination knows its [`Target`] and whether routes attach to
//! its service (set by the registry on every snapshot), so a request to a service
//! without routes pays one relaxed load to learn it need not look for them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption, Guard};
use weft_proto::model::{Protocol, Resilience, Sampling};

use crate::balance::Picker;
use crate::metrics::ServiceMetrics;
use crate::resilience::breaker::{Breakers, Limit};
use crate::resilience::budget::RetryBudget;
use crate::resilience::failover::Feedback;
use crate::resilience::{locality, outlier, reachability};
use crate::snapshot::{Policy, Target};
use crate::trace::Tracer;

use super::endpoint::{Endpoint, InFlight};
use super::error::ForwardError;
use super::http::routing::Routing;
use super::probe;

#[derive(Debug)]
pub struct Destination {
    /// What upstream endpoints speak.
    pub protocol: Protocol,
    pub metrics: Arc<ServiceMetrics>,
    /// The retry budget, and the failover bound on moves beside it.
    pub budget: RetryBudget,
    pub breakers: Breakers,
    /// The latest end of an ejection among the endpoints (`balance::now` ns): while
    /// `now` is past it no endpoint is ejected, and a pick skips the scan.
    ejected_until: AtomicU64,
    set: ArcSwap<EndpointSet>,
    /// The service port this destination is; `None` for the local app or a
    /// passthrough, which routes never apply to.
    pub target: Option<Target>,
    /// Whether some route attaches to the target's service in the current snapshot
    /// (read first: an unrouted request pays one relaxed load).
    routed: AtomicBool,
    /// What routing a request needs, resolved when the snapshot was applied.
    routing: ArcSwapOption<Routing>,
    /// Whether the service traces (read first: a request of a service that does
    /// not pays one relaxed load).
    traced: AtomicBool,
    /// Its tracing, set by the registry on every snapshot.
    tracer: ArcSwapOption<Tracer>,
    /// The service's access log share in millionths plus one; 0: off. Set by the
    /// registry on every snapshot, read by every request (one relaxed load).
    access_log: AtomicU32,
}

/// The endpoints a destination currently balances over, and how.
#[derive(Debug)]
pub struct EndpointSet {
    /// Sorted by locality tier, nearest first (see [`crate::resilience::locality`]).
    pub endpoints: Vec<Arc<Endpoint>>,
    pub picker: Picker,
    pub policy: Arc<Resilience>,
    /// Per tier, nearest first: (tier, end index in `endpoints`, endpoints listed in
    /// the tier including those the control plane marks unhealthy).
    pub tiers: Vec<Tier>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    pub tier: u8,
    pub end: usize,
    pub listed: usize,
}

impl EndpointSet {
    pub fn new(
        policy: Policy,
        endpoints: Vec<Arc<Endpoint>>,
        cursor: usize,
        resilience: Arc<Resilience>,
        tiers: Vec<Tier>,
    ) -> EndpointSet {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight()).collect();
        EndpointSet {
            picker: Picker::new(policy, &weights, cursor),
            endpoints,
            policy: resilience,
            tiers,
        }
    }

    /// A set without locality tiers.
    pub fn flat(
        policy: Policy,
        endpoints: Vec<Arc<Endpoint>>,
        cursor: usize,
        resilience: Arc<Resilience>,
    ) -> EndpointSet {
        let tiers = vec![Tier {
            tier: 0,
            end: endpoints.len(),
            listed: endpoints.len(),
        }];
        Self::new(policy, endpoints, cursor, resilience, tiers)
    }

    /// How many endpoints (a prefix of `endpoints`) a request may use: the nearest
    /// tiers that hold enough available ones, or all when no tier does.
    /// `any_out`: whether some endpoint may be out of rotation (else none is
    /// looked at).
    pub fn usable(&self, now: u64, any_out: bool) -> usize {
        if self.tiers.len() <= 1 {
            return self.endpoints.len();
        }
        let mut start = 0;
        let counts: Vec<(u8, usize, usize)> = self
            .tiers
            .iter()
            .map(|t| {
                let range = &self.endpoints[start..t.end];
                start = t.end;
                let up = if any_out {
                    range.iter().filter(|e| !e.out_of_rotation(now)).count()
                } else {
                    range.len()
                };
                (t.tier, t.listed, up)
            })
            .collect();
        match locality::cutoff(&counts, self.policy.locality.min_healthy_percent) {
            Some(cutoff) => self
                .tiers
                .iter()
                .find(|t| t.tier == cutoff)
                .map_or(self.endpoints.len(), |t| t.end),
            None => self.endpoints.len(),
        }
    }
}

impl Destination {
    pub fn new(protocol: Protocol, metrics: Arc<ServiceMetrics>, set: EndpointSet) -> Arc<Self> {
        Arc::new(Self::build(protocol, metrics, set, None))
    }

    /// The destination of a service port, which routes may apply to.
    pub fn for_target(
        protocol: Protocol,
        metrics: Arc<ServiceMetrics>,
        set: EndpointSet,
        target: Target,
    ) -> Arc<Self> {
        Arc::new(Self::build(protocol, metrics, set, Some(target)))
    }

    fn build(
        protocol: Protocol,
        metrics: Arc<ServiceMetrics>,
        set: EndpointSet,
        target: Option<Target>,
    ) -> Destination {
        Destination {
            protocol,
            metrics,
            budget: RetryBudget::default(),
            breakers: Breakers::default(),
            ejected_until: AtomicU64::new(0),
            set: ArcSwap::from_pointee(set),
            target,
            routed: AtomicBool::new(false),
            routing: ArcSwapOption::empty(),
            traced: AtomicBool::new(false),
            tracer: ArcSwapOption::empty(),
            access_log: AtomicU32::new(0),
        }
    }

    /// Whether routes attach to this destination's service (as of the last
    /// snapshot the registry applied).
    pub fn routed(&self) -> bool {
        self.routed.load(Ordering::Relaxed)
    }

    /// The routes of this destination's service, resolved for this proxy's callers.
    pub fn routing(&self) -> Option<Arc<Routing>> {
        self.routing.load_full()
    }

    pub fn set_routing(&self, routing: Option<Arc<Routing>>) {
        self.routed.store(routing.is_some(), Ordering::Relaxed);
        self.routing.store(routing);
    }

    /// The service's tracing: outbound the destination service's, inbound the
    /// local workload's; `None` while it does not trace.
    #[inline]
    pub fn tracer(&self) -> Option<Arc<Tracer>> {
        match self.traced.load(Ordering::Relaxed) {
            true => self.tracer.load_full(),
            false => None,
        }
    }

    pub fn set_tracer(&self, tracer: Option<Arc<Tracer>>) {
        self.traced.store(tracer.is_some(), Ordering::Relaxed);
        self.tracer.store(tracer);
    }

    /// Whether this request (or connection) goes into the access log: off unless
    /// the service's telemetry turns it on, then a draw against its share.
    #[inline]
    pub fn logs_one(&self) -> bool {
        match self.access_log.load(Ordering::Relaxed) {
            0 => false,
            share => Sampling::from_per_million(share - 1).admits(rand::random()),
        }
    }

    /// The service's access log share as of the last snapshot; `None`: off.
    pub fn set_access_log(&self, share: Option<Sampling>) {
        let encoded = share.map_or(0, |s| s.per_million() + 1);
        self.access_log.store(encoded, Ordering::Relaxed);
    }

    /// A destination with one fixed address: the local app, or a passthrough. It
    /// keeps the old behaviour: no limits, no ejection, no retries beyond moving a
    /// request that reached nothing.
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
            EndpointSet::flat(Policy::RoundRobin, vec![endpoint], 0, unguarded()),
        )
    }

    pub fn endpoints(&self) -> Guard<Arc<EndpointSet>> {
        self.set.load()
    }

    /// The current set, owned: for holding across an await (a `Guard` should not be).
    pub fn endpoints_full(&self) -> Arc<EndpointSet> {
        self.set.load_full()
    }

    pub fn replace(&self, set: EndpointSet) {
        self.set.store(Arc::new(set));
    }

    /// Whether some endpoint may be ejected at `now`.
    pub fn any_ejected(&self, now: u64) -> bool {
        now < self.ejected_until.load(Ordering::Acquire)
    }

    /// Records an answer's outcome on `endpoint` for outlier detection; true when
    /// it ejected the endpoint. The ejection cap counts only endpoints that are
    /// reachable: it guards against false positives among those that answer,
    /// and an unreachable endpoint is out of rotation anyway.
    pub fn record(&self, set: &EndpointSet, endpoint: &Endpoint, success: bool, now: u64) -> bool {
        let config = &set.policy.outlier_detection;
        let may_eject = || {
            let reachable = set
                .endpoints
                .iter()
                .filter(|e| !e.reachability.is_unreachable());
            let (mut total, mut ejected) = (0, 0);
            for e in reachable {
                total += 1;
                ejected += usize::from(e.outlier.is_ejected(now));
            }
            ejected < outlier::max_ejected(total, config.max_ejection_percent)
        };
        match endpoint.outlier.record(success, now, config, may_eject) {
            Some(until) => {
                self.ejected_until.fetch_max(until, Ordering::AcqRel);
                true
            }
            None => false,
        }
    }

    /// Picks an endpoint for a new attempt (a request, or a TCP connection): from
    /// the nearest locality tiers that have enough endpoints in rotation, passing
    /// over endpoints out of rotation and the indices in `failed` (tried already).
    /// Returns the index to add to `failed`.
    pub fn pick(&self, set: &EndpointSet, failed: &[usize]) -> Option<(usize, Arc<Endpoint>)> {
        self.pick_at(set, failed, crate::balance::now())
    }

    /// [`Destination::pick`] at `now` ([`crate::balance::now`] nanoseconds).
    pub fn pick_at(
        &self,
        set: &EndpointSet,
        failed: &[usize],
        now: u64,
    ) -> Option<(usize, Arc<Endpoint>)> {
        let any_out = self.any_ejected(now) || reachability::any_unreachable();
        let usable = set.usable(now, any_out);
        let candidates = &set.endpoints[..usable];
        let mut rng = rand::rng();
        let tried = |i: usize| failed.contains(&i);
        let picker = &set.picker;
        let index = match any_out {
            false => picker.pick(candidates, tried, now, &mut rng),
            true => picker
                .pick(
                    candidates,
                    |i| tried(i) || candidates[i].out_of_rotation(now),
                    now,
                    &mut rng,
                )
                // Panic routing: none in rotation is left untried.
                .or_else(|| picker.pick(candidates, tried, now, &mut rng)),
        }
        // Every endpoint was tried: a retry goes back to one of them.
        .or_else(|| picker.pick(candidates, |_| false, now, &mut rng))?;
        Some((index, candidates[index].clone()))
    }

    /// Applies what an attempt told about its endpoint ([`Feedback`]) at `now`
    /// ([`crate::balance::now`] nanoseconds): the latency sample, outlier
    /// detection, or taking the endpoint out of rotation and probing it.
    pub fn feedback(&self, set: &EndpointSet, attempt: &InFlight, feedback: Feedback, now: u64) {
        let endpoint = attempt.endpoint();
        match feedback {
            Feedback::Success => {
                attempt.observe_at(now);
                self.observe_at(set, endpoint, true, now);
                probe::back_in_rotation(endpoint);
            }
            Feedback::Failure => {
                attempt.observe_failure_at(now);
                self.observe_at(set, endpoint, false, now);
            }
            Feedback::Unreachable => {
                if endpoint.reachability.lose() {
                    self.metrics.resilience().unreachable.increment(1);
                    tracing::info!(
                        service = self.metrics.service(),
                        endpoint = %endpoint.address,
                        "endpoint unreachable: out of rotation until it accepts connections"
                    );
                    probe::spawn(endpoint);
                }
            }
            Feedback::None => {}
        }
    }

    /// Feeds an answer's outcome to outlier detection, counting an ejection.
    pub fn observe_at(&self, set: &EndpointSet, endpoint: &Endpoint, success: bool, now: u64) {
        if self.record(set, endpoint, success, now) {
            let resilience = self.metrics.resilience();
            resilience.ejections.increment(1);
            resilience.ejected.increment(1.0);
            tracing::info!(
                service = self.metrics.service(),
                endpoint = %endpoint.address,
                "endpoint ejected after consecutive failures"
            );
        }
    }

    /// The error for a request or connection a circuit breaker refused, counted.
    pub fn overflow(&self, limit: Limit) -> ForwardError {
        self.metrics.resilience().overflows[limit as usize].increment(1);
        ForwardError::Overflow(limit.label())
    }

    /// Endpoints ejected at `now`, for the gauge.
    pub fn ejected_count(&self, now: u64) -> usize {
        if !self.any_ejected(now) {
            return 0;
        }
        let set = self.endpoints();
        set.endpoints
            .iter()
            .filter(|e| e.outlier.is_ejected(now))
            .count()
    }

    /// Endpoints out of rotation for being unreachable, for the gauge.
    pub fn unreachable_count(&self) -> usize {
        if !reachability::any_unreachable() {
            return 0;
        }
        let set = self.endpoints();
        set.endpoints
            .iter()
            .filter(|e| e.reachability.is_unreachable())
            .count()
    }
}

/// The policy of a destination that is no mesh service.
pub fn unguarded() -> Arc<Resilience> {
    static POLICY: std::sync::OnceLock<Arc<Resilience>> = std::sync::OnceLock::new();
    POLICY
        .get_or_init(|| {
            let mut policy = Resilience::default();
            policy.retries.max_retries = 0;
            policy.outlier_detection.consecutive_failures = 0;
            policy.circuit_breakers.max_connections = u32::MAX;
            policy.circuit_breakers.max_pending_requests = u32::MAX;
            policy.circuit_breakers.max_requests = u32::MAX;
            policy.locality.min_healthy_percent = 0;
            Arc::new(policy)
        })
        .clone()
}
