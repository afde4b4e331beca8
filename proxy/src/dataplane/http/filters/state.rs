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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::RouteView;
    use weft_proto::resource::{decode_resource, Body};

    /// A snapshot holding one HTTPRoute `shop/r` whose rule 1 limits to `burst`.
    fn snapshot(burst: u32, other: &str) -> Snapshot {
        let yaml = format!(
            "kind: HTTPRoute
metadata: {{name: r, namespace: shop}}
spec:
  parentRefs: [{{name: web}}]
  rules:
  - matches: [{{path: {{value: {other}}}}}]
  - matches: [{{path: {{value: /limited}}}}]
    filters:
    - {{type: weft.io/Fault, fault: {{delay: {{fixedDelay: 1ms, percent: 1}}}}}}
    - {{type: weft.io/LocalRateLimit, localRateLimit: {{requestsPerUnit: 1, unit: minute, burst: {burst}}}}}
"
        );
        let documents = weft_proto::document::parse(&yaml).expect("parse");
        let Ok(Body::HttpRoute(route)) = decode_resource(&documents[0].to_resource()) else {
            panic!("not an HTTPRoute");
        };
        let mut snapshot = Snapshot::default();
        snapshot.http_routes.insert(
            route.name.clone(),
            Arc::new(RouteView {
                route: Arc::new(route),
                version: 1,
            }),
        );
        snapshot
    }

    fn limit(burst: u32) -> weft_proto::model::route::LocalRateLimit {
        weft_proto::model::route::LocalRateLimit {
            requests_per_unit: 1,
            unit: weft_proto::model::route::RateUnit::Minute,
            burst,
        }
    }

    #[test]
    fn a_bucket_outlives_pushes_that_keep_its_limit() {
        let name = ResourceName::parse("shop/r").expect("name");
        let first = State::build(&snapshot(2, "/a"), &State::default());
        let bucket = |state: &State, burst| {
            state
                .route(&name)
                .expect("route state")
                .bucket(1, 1, &limit(burst))
                .map(|b| b.take(crate::balance::now()).is_ok())
        };
        assert_eq!(bucket(&first, 2), Some(true));
        assert_eq!(bucket(&first, 2), Some(true));
        assert_eq!(bucket(&first, 2), Some(false));
        // Another rule changed: the bucket stays empty.
        let second = State::build(&snapshot(2, "/b"), &first);
        assert_eq!(bucket(&second, 2), Some(false));
        // Its limit changed: a new, full bucket; the old limit finds none.
        let third = State::build(&snapshot(3, "/b"), &second);
        assert_eq!(bucket(&third, 2), None);
        assert_eq!(bucket(&third, 3), Some(true));
        // A route without these filters gets no state.
        assert!(State::build(&Snapshot::default(), &third)
            .route(&name)
            .is_none());
    }
}
