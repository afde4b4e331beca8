//! What the filters keep beside the route table, per route: the counters of its
//! Fault, LocalRateLimit and RequestMirror filters, and the rate-limit buckets.
//!
//! Rebuilt with the registry's tables on every snapshot ([`State::build`]), from
//! the previous state: a bucket is kept while its route, rule index, filter
//! position and limit stay the same, so a push that does not change the limit
//! does not refill it. Routes without such filters get nothing here, so a routed
//! request whose rule has no filter never looks at this.

use std::collections::HashMap;
use std::sync::Arc;

use weft_proto::model::route::{Filter, Route, RouteRule};
use weft_proto::model::ResourceName;

use crate::metrics::RouteFilterMetrics;
use crate::snapshot::Snapshot;

use super::rate_limit::Bucket;

/// The filter state of every route of one snapshot that needs some.
#[derive(Default)]
pub struct State {
    routes: HashMap<ResourceName, Arc<RouteState>>,
}

pub struct RouteState {
    pub metrics: Arc<RouteFilterMetrics>,
    /// (rule index, filter index, bucket), one per LocalRateLimit filter.
    buckets: Vec<(usize, usize, Arc<Bucket>)>,
}

impl RouteState {
    /// The bucket of the rule's filter at `filter`, if it was made for `limit`.
    /// `None` only in the moment a push changed the rule under a request that
    /// matched it before: that request goes unlimited rather than wrongly limited.
    pub fn bucket(
        &self,
        rule: usize,
        filter: usize,
        limit: &weft_proto::model::route::LocalRateLimit,
    ) -> Option<&Bucket> {
        self.buckets
            .iter()
            .find(|(r, f, b)| *r == rule && *f == filter && b.limit == *limit)
            .map(|(_, _, bucket)| &**bucket)
    }
}

impl State {
    pub fn build(snapshot: &Snapshot, previous: &State) -> State {
        let mut routes = HashMap::new();
        let now = crate::balance::now();
        for view in snapshot.http_routes.values() {
            add(&mut routes, &view.route, previous, now);
        }
        for view in snapshot.grpc_routes.values() {
            add(&mut routes, &view.route, previous, now);
        }
        State { routes }
    }

    pub fn route(&self, name: &ResourceName) -> Option<&Arc<RouteState>> {
        self.routes.get(name)
    }
}

fn add<R: RouteRule>(
    out: &mut HashMap<ResourceName, Arc<RouteState>>,
    route: &Route<R>,
    previous: &State,
    now: u64,
) {
    let stateful = |f: &Filter| {
        matches!(
            f,
            Filter::Fault(_) | Filter::LocalRateLimit(_) | Filter::RequestMirror(_)
        )
    };
    if !route.rules.iter().any(|r| r.filters().iter().any(stateful)) {
        return;
    }
    let before = previous.routes.get(&route.name);
    let mut buckets = Vec::new();
    for (rule, r) in route.rules.iter().enumerate() {
        for (filter, f) in r.filters().iter().enumerate() {
            let Filter::LocalRateLimit(limit) = f else {
                continue;
            };
            let kept = before
                .and_then(|b| {
                    b.buckets
                        .iter()
                        .find(|(r, f, _)| *r == rule && *f == filter)
                })
                .map(|(_, _, bucket)| bucket)
                .filter(|bucket| bucket.limit == *limit)
                .cloned();
            let bucket = kept.unwrap_or_else(|| Arc::new(Bucket::new(*limit, now)));
            buckets.push((rule, filter, bucket));
        }
    }
    let metrics = before
        .map(|b| b.metrics.clone())
        .unwrap_or_else(|| Arc::new(RouteFilterMetrics::new(route.name.to_string())));
    out.insert(
        route.name.clone(),
        Arc::new(RouteState { metrics, buckets }),
    );
}
