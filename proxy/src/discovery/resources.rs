//! The resources a proxy holds, and how a push is validated into them.
//!
//! Each resource of a push is converted on its own: the valid ones replace what was
//! held, a rejected one leaves the last good version in place and is reported in the
//! NACK. The data path only ever sees the [`Snapshot`] built from what was accepted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use weft_proto::model::{
    GrpcRoute, HttpRoute, ResourceName, TrustBundle, TRUST_BUNDLE_NAME, TRUST_BUNDLE_NAMESPACE,
};
use weft_proto::resource::{self, Body, Kind};
use weft_proto::v1;

use crate::snapshot::{
    EndpointsView, Policy, PolicyView, RouteView, Routes, ServiceView, Snapshot,
};

#[derive(Debug, Default, Clone)]
pub struct Resources {
    services: BTreeMap<ResourceName, Arc<ServiceView>>,
    endpoints: BTreeMap<ResourceName, Arc<EndpointsView>>,
    /// Not part of the data path's snapshot: the identity manager takes the roots.
    trust_bundles: BTreeMap<ResourceName, Arc<TrustBundleView>>,
    /// Every accepted resource as it came (type, name) -> envelope: what the state
    /// directory keeps, so a restarted proxy validates it again like a push.
    accepted: BTreeMap<(Kind, String), v1::Resource>,
    policies: BTreeMap<ResourceName, Arc<PolicyView>>,
    /// HTTPRoutes and GRPCRoutes, and their tables per service: recompiled when a
    /// service or a route changes, not on every push (endpoints change far more
    /// often).
    routes: Routes,
}

/// A trust bundle as accepted from the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundleView {
    pub bundle: TrustBundle,
    pub version: u64,
}

impl Resources {
    /// Applies a push; returns the resources rejected, for the NACK.
    pub fn apply(&mut self, response: &v1::DiscoveryResponse) -> Vec<v1::ResourceError> {
        let mut errors = Vec::new();
        let Some(kind) = Kind::from_type_url(&response.type_url) else {
            return response
                .resources
                .iter()
                .map(|r| reject(r, format!("unknown resource type {:?}", response.type_url)))
                .collect();
        };
        for resource in &response.resources {
            let accepted = accept(kind, resource);
            if accepted.is_ok() {
                self.accepted
                    .insert((kind, resource.name.clone()), resource.clone());
            }
            match accepted {
                Ok(Accepted::Service(view)) => {
                    self.services
                        .insert(view.service.name.clone(), Arc::new(view));
                }
                Ok(Accepted::Endpoints(view)) => {
                    self.endpoints
                        .insert(view.endpoints.name.clone(), Arc::new(view));
                }
                Ok(Accepted::TrustBundle(view)) => {
                    self.trust_bundles
                        .insert(view.bundle.name.clone(), Arc::new(view));
                }
                Ok(Accepted::AuthorizationPolicy(view)) => {
                    self.policies
                        .insert(view.policy.name.clone(), Arc::new(view));
                }
                Ok(Accepted::HttpRoute(view)) => {
                    self.routes
                        .http
                        .insert(view.route.name.clone(), Arc::new(view));
                }
                Ok(Accepted::GrpcRoute(view)) => {
                    self.routes
                        .grpc
                        .insert(view.route.name.clone(), Arc::new(view));
                }
                Err(message) => {
                    tracing::warn!(name = %resource.name, version = resource.version, %message, "rejected a resource; keeping the last good one");
                    errors.push(reject(resource, message));
                }
            }
        }
        for name in &response.removed {
            self.accepted.remove(&(kind, name.clone()));
            let Ok(name) = ResourceName::parse(name) else {
                continue;
            };
            match kind {
                Kind::Service => self.services.remove(&name).map(|_| ()),
                Kind::Endpoints => self.endpoints.remove(&name).map(|_| ()),
                Kind::TrustBundle => self.trust_bundles.remove(&name).map(|_| ()),
                Kind::AuthorizationPolicy => self.policies.remove(&name).map(|_| ()),
                Kind::HttpRoute => self.routes.http.remove(&name).map(|_| ()),
                Kind::GrpcRoute => self.routes.grpc.remove(&name).map(|_| ()),
            };
        }
        if matches!(kind, Kind::Service | Kind::HttpRoute | Kind::GrpcRoute) {
            self.routes.compile(&self.services);
        }
        errors
    }

    pub fn snapshot(&self) -> Snapshot {
        let services: HashMap<_, _> = self
            .services
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let endpoints: HashMap<_, _> = self
            .endpoints
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        Snapshot::new(services, endpoints)
            .with_policies(self.policies.clone())
            .with_routes(self.routes.clone())
    }

    /// Every accepted resource, grouped as one push per type: the state directory's
    /// content, replayed through [`Resources::apply`] when it is loaded.
    pub fn pushes(&self) -> Vec<v1::DiscoveryResponse> {
        Kind::ALL
            .iter()
            .map(|kind| v1::DiscoveryResponse {
                nonce: String::new(),
                type_url: kind.type_url().to_owned(),
                resources: self
                    .accepted
                    .range((*kind, String::new())..)
                    .take_while(|((k, _), _)| k == kind)
                    .map(|(_, r)| r.clone())
                    .collect(),
                removed: Vec::new(),
                more: false,
            })
            .collect()
    }

    /// What to announce in a Hello, so that only the difference is sent.
    pub fn known(&self) -> Vec<v1::ResourceVersion> {
        let services = self.services.iter().map(|(n, v)| v1::ResourceVersion {
            type_url: Kind::Service.type_url().to_owned(),
            name: n.to_string(),
            version: v.version,
        });
        let endpoints = self.endpoints.iter().map(|(n, v)| v1::ResourceVersion {
            type_url: Kind::Endpoints.type_url().to_owned(),
            name: n.to_string(),
            version: v.version,
        });
        let bundles = self.trust_bundles.iter().map(|(n, v)| v1::ResourceVersion {
            type_url: Kind::TrustBundle.type_url().to_owned(),
            name: n.to_string(),
            version: v.version,
        });
        let policies = self.policies.iter().map(|(n, v)| v1::ResourceVersion {
            type_url: Kind::AuthorizationPolicy.type_url().to_owned(),
            name: n.to_string(),
            version: v.version,
        });
        let http_routes = self.routes.http.iter().map(|(n, v)| v1::ResourceVersion {
            type_url: Kind::HttpRoute.type_url().to_owned(),
            name: n.to_string(),
            version: v.version,
        });
        let grpc_routes = self.routes.grpc.iter().map(|(n, v)| v1::ResourceVersion {
            type_url: Kind::GrpcRoute.type_url().to_owned(),
            name: n.to_string(),
            version: v.version,
        });
        services
            .chain(endpoints)
            .chain(bundles)
            .chain(policies)
            .chain(http_routes)
            .chain(grpc_routes)
            .collect()
    }

    /// The mesh's trust bundle, once the control plane has sent it.
    pub fn trust_bundle(&self) -> Option<Arc<TrustBundleView>> {
        let name = ResourceName {
            namespace: TRUST_BUNDLE_NAMESPACE.to_owned(),
            name: TRUST_BUNDLE_NAME.to_owned(),
        };
        self.trust_bundles.get(&name).cloned()
    }

    pub fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Service => self.services.len(),
            Kind::Endpoints => self.endpoints.len(),
            Kind::TrustBundle => self.trust_bundles.len(),
            Kind::AuthorizationPolicy => self.policies.len(),
            Kind::HttpRoute => self.routes.http.len(),
            Kind::GrpcRoute => self.routes.grpc.len(),
        }
    }

    pub fn max_version(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Service => self.services.values().map(|v| v.version).max(),
            Kind::Endpoints => self.endpoints.values().map(|v| v.version).max(),
            Kind::TrustBundle => self.trust_bundles.values().map(|v| v.version).max(),
            Kind::AuthorizationPolicy => self.policies.values().map(|v| v.version).max(),
            Kind::HttpRoute => self.routes.http.values().map(|v| v.version).max(),
            Kind::GrpcRoute => self.routes.grpc.values().map(|v| v.version).max(),
        }
        .unwrap_or(0)
    }
}

enum Accepted {
    Service(ServiceView),
    Endpoints(EndpointsView),
    TrustBundle(TrustBundleView),
    AuthorizationPolicy(PolicyView),
    HttpRoute(RouteView<HttpRoute>),
    GrpcRoute(RouteView<GrpcRoute>),
}

fn accept(kind: Kind, resource: &v1::Resource) -> Result<Accepted, String> {
    let body = resource::decode_resource(resource).map_err(|e| e.to_string())?;
    if body.kind() != kind {
        return Err(format!("a {} body in a {kind} response", body.kind()));
    }
    match body {
        Body::Service(service) => {
            let policy = Policy::from_name(service.load_balancer.as_str()).ok_or_else(|| {
                format!(
                    "load_balancer: {:?} is not supported by this proxy (supported: {})",
                    service.load_balancer.as_str(),
                    Policy::SUPPORTED
                )
            })?;
            Ok(Accepted::Service(ServiceView {
                service,
                policy,
                version: resource.version,
            }))
        }
        Body::Endpoints(endpoints) => Ok(Accepted::Endpoints(EndpointsView {
            endpoints,
            version: resource.version,
        })),
        Body::TrustBundle(bundle) => Ok(Accepted::TrustBundle(TrustBundleView {
            bundle,
            version: resource.version,
        })),
        Body::AuthorizationPolicy(policy) => Ok(Accepted::AuthorizationPolicy(PolicyView {
            policy,
            version: resource.version,
        })),
        Body::HttpRoute(route) => Ok(Accepted::HttpRoute(RouteView {
            route: Arc::new(route),
            version: resource.version,
        })),
        Body::GrpcRoute(route) => Ok(Accepted::GrpcRoute(RouteView {
            route: Arc::new(route),
            version: resource.version,
        })),
    }
}

fn reject(resource: &v1::Resource, message: String) -> v1::ResourceError {
    v1::ResourceError {
        name: resource.name.clone(),
        version: resource.version,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::resource::to_any;

    fn service(name: &str, load_balancer: &str, version: u64) -> v1::Resource {
        let message = v1::Service {
            namespace: "shop".into(),
            name: name.into(),
            ports: vec![v1::ServicePort {
                name: String::new(),
                port: 80,
                protocol: "http1".into(),
            }],
            virtual_ips: vec![],
            hostnames: vec![],
            load_balancer: load_balancer.into(),
            mtls: String::new(),
            ..Default::default()
        };
        v1::Resource {
            name: format!("shop/{name}"),
            version,
            body: Some(to_any(Kind::Service, &message)),
        }
    }

    fn push(resources: Vec<v1::Resource>, removed: &[&str]) -> v1::DiscoveryResponse {
        v1::DiscoveryResponse {
            nonce: "1".into(),
            type_url: Kind::Service.type_url().into(),
            resources,
            removed: removed.iter().map(|s| s.to_string()).collect(),
            more: false,
        }
    }

    #[test]
    fn a_rejected_resource_keeps_the_last_good_one_and_the_rest_apply() {
        let mut held = Resources::default();
        assert!(held
            .apply(&push(vec![service("orders", "round_robin", 1)], &[]))
            .is_empty());
        let errors = held.apply(&push(
            vec![
                service("orders", "least_request", 2),
                service("users", "", 2),
            ],
            &[],
        ));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].name, "shop/orders");
        assert!(
            errors[0].message.contains("least_request"),
            "{}",
            errors[0].message
        );
        let snapshot = held.snapshot();
        let orders = &snapshot.services[&ResourceName::parse("shop/orders").expect("name")];
        assert_eq!((orders.version, orders.policy), (1, Policy::RoundRobin));
        assert_eq!(held.count(Kind::Service), 2);
    }

    #[test]
    fn removals_apply_and_known_versions_are_announced() {
        let mut held = Resources::default();
        held.apply(&push(
            vec![service("orders", "", 3), service("users", "", 4)],
            &[],
        ));
        held.apply(&push(vec![], &["shop/users"]));
        let known = held.known();
        assert_eq!(known.len(), 1);
        assert_eq!(
            (known[0].name.as_str(), known[0].version),
            ("shop/orders", 3)
        );
    }

    #[test]
    fn undecodable_and_mistyped_bodies_are_rejected() {
        let mut held = Resources::default();
        let mut bad = service("orders", "", 1);
        if let Some(body) = bad.body.as_mut() {
            body.value = vec![0xff, 0xff, 0xff];
        }
        assert_eq!(held.apply(&push(vec![bad], &[])).len(), 1);
        let mut mistyped = push(vec![service("orders", "", 1)], &[]);
        mistyped.type_url = Kind::Endpoints.type_url().into();
        assert_eq!(held.apply(&mistyped).len(), 1);
        assert_eq!(held.count(Kind::Service), 0);
    }

    fn route_push(kind: Kind, yaml: &str, removed: &[&str]) -> v1::DiscoveryResponse {
        let documents = match yaml {
            "" => Vec::new(),
            yaml => weft_proto::document::parse(yaml).expect("parse"),
        };
        let resources = documents
            .iter()
            .map(|d| v1::Resource {
                version: 5,
                ..d.to_resource()
            })
            .collect();
        v1::DiscoveryResponse {
            type_url: kind.type_url().into(),
            ..push(resources, removed)
        }
    }

    #[test]
    fn routes_using_every_filter_timeouts_and_retries_are_accepted() {
        let mut held = Resources::default();
        let route = "kind: HTTPRoute
metadata: {name: filtered, namespace: shop}
spec:
  parentRefs: [{name: orders}]
  rules:
  - matches: [{path: {value: /old}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}]
  - filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-a, value: b}]}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {remove: [server]}}
    - {type: URLRewrite, urlRewrite: {hostname: orders.internal}}
    timeouts: {request: 1s, backendRequest: 500ms}
    retry: {codes: [503], attempts: 1}
  - matches: [{path: {value: /copy}}]
    filters:
    - {type: RequestMirror, requestMirror: {backendRef: {name: users}, percent: 10}}
    - {type: weft.io/Fault, fault: {delay: {fixedDelay: 10ms, percent: 5}}}
    - {type: weft.io/LocalRateLimit, localRateLimit: {requestsPerUnit: 10, unit: second}}
";
        let errors = held.apply(&route_push(Kind::HttpRoute, route, &[]));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(held.count(Kind::HttpRoute), 1);

        let route = "kind: GRPCRoute
metadata: {name: slow, namespace: shop}
spec:
  parentRefs: [{name: orders}]
  rules:
  - filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: x-a, value: b}]}}
    - {type: weft.io/Fault, fault: {abort: {grpcStatus: UNAVAILABLE, percent: 50}}}
    timeouts: {request: 1s}
    retry: {codes: [UNAVAILABLE]}
";
        let errors = held.apply(&route_push(Kind::GrpcRoute, route, &[]));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(held.count(Kind::GrpcRoute), 1);
    }

    #[test]
    fn routes_compile_per_service_whichever_arrives_first() {
        let mut held = Resources::default();
        let route = "kind: HTTPRoute
metadata: {name: split, namespace: shop}
spec:
  parentRefs: [{name: orders}]
  rules: [{backendRefs: [{name: orders, weight: 9}, {name: users, weight: 1}]}]
";
        assert!(held
            .apply(&route_push(Kind::HttpRoute, route, &[]))
            .is_empty());
        let orders = ResourceName::parse("shop/orders").expect("name");
        // The parent service is not known yet: nothing to compile against.
        assert!(held.snapshot().routes_of(&orders).is_none());
        assert_eq!(held.count(Kind::HttpRoute), 1);

        held.apply(&push(vec![service("orders", "", 1)], &[]));
        let snapshot = held.snapshot();
        let routes = snapshot.routes_of(&orders).expect("compiled");
        assert!(routes.for_caller(80, "shop").is_some());
        assert!(snapshot
            .routes_of(&ResourceName::parse("shop/users").expect("name"))
            .is_none());
        assert!(held
            .known()
            .iter()
            .any(|k| k.type_url == Kind::HttpRoute.type_url()
                && k.name == "shop/split"
                && k.version == 5));

        held.apply(&route_push(Kind::HttpRoute, "", &["shop/split"]));
        assert!(held.snapshot().routes_of(&orders).is_none());
        assert_eq!(held.count(Kind::HttpRoute), 0);
    }

    #[test]
    fn an_invalid_route_is_nacked_and_the_last_good_one_kept() {
        let mut held = Resources::default();
        held.apply(&push(vec![service("orders", "", 1)], &[]));
        let good = "kind: HTTPRoute
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{name: orders}]
  rules: [{matches: [{path: {value: /a}}]}]
";
        assert!(held
            .apply(&route_push(Kind::HttpRoute, good, &[]))
            .is_empty());
        let bad = good.replace("{value: /a}", "{type: RegularExpression, value: '(a'}");
        let errors = held.apply(&route_push(Kind::HttpRoute, &bad, &[]));
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .message
                .contains("spec.rules[0].matches[0].path.value"),
            "{}",
            errors[0].message
        );
        let snapshot = held.snapshot();
        let kept = &snapshot.http_routes[&ResourceName::parse("shop/r").expect("name")];
        assert!(matches!(
            kept.route.rules[0].matches[0].path,
            weft_proto::model::route::PathMatch::PathPrefix(_)
        ));
    }
}
