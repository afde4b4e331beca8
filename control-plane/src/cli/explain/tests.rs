use super::*;
use http::Method;
use weft_proto::document;
use weft_proto::model::TrustDomain;

const MESH: &str = r#"
kind: Service
metadata: {name: orders, namespace: shop}
spec:
  ports: [{name: http, port: 80, protocol: http1}]
  virtualIPs: [10.96.0.10]
  hostnames: [orders.shop]
  timeouts: {requestMs: 5000}
  retries: {retryOn: [connect-failure, 5xx], maxRetries: 2}
---
kind: Service
metadata: {name: orders-v2, namespace: shop}
spec:
  ports: [{name: http, port: 80, protocol: http1}]
  hostnames: [orders-v2.shop]
  timeouts: {connectMs: 250}
---
kind: Service
metadata: {name: payments, namespace: shop}
spec:
  ports: [{name: grpc, port: 9090, protocol: grpc}]
  hostnames: [payments.shop]
---
kind: Endpoints
metadata: {name: orders, namespace: shop}
spec:
  endpoints:
  - {address: 10.0.0.5, port: 8080, locality: {zone: a}}
  - {address: 10.0.0.6, port: 8080, locality: {zone: b}, health: unhealthy}
  - {address: 10.0.0.7, port: 8080, locality: {zone: b}, health: unhealthy, labels: {weft.io/draining: "true"}}
---
kind: Endpoints
metadata: {name: orders-v2, namespace: shop}
spec:
  endpoints:
  - {address: 10.0.1.5, port: 8080}
---
kind: AuthorizationPolicy
metadata: {name: orders-callers, namespace: shop}
spec:
  service: orders
  allow: [spiffe://cluster.local/ns/web/*]
---
kind: HTTPRoute
metadata: {name: orders-split, namespace: shop}
spec:
  parentRefs: [{name: orders, port: 80}]
  rules:
  - name: api
    matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: orders, weight: 90}, {name: orders-v2, weight: 10}]
    timeouts: {request: 2s}
    retry: {codes: [503], attempts: 3}
  - name: exact
    matches: [{path: {type: Exact, value: /api/health}}]
  - name: drained
    matches: [{path: {type: PathPrefix, value: /old}}]
    backendRefs: [{name: orders-v2, weight: 0}]
---
kind: GRPCRoute
metadata: {name: payments, namespace: shop}
spec:
  parentRefs: [{name: payments}]
  rules:
  - matches: [{method: {service: shop.Payments, method: Charge}}]
"#;

fn mesh(extra: &str) -> Mesh {
    let text = format!("{MESH}\n---\n{extra}");
    let documents = document::parse(&text).expect("documents");
    Mesh::from_documents(&documents).expect("mesh")
}

fn domain() -> TrustDomain {
    TrustDomain::new("cluster.local").expect("domain")
}

fn run(mesh: &Mesh, source: &str, url: &str) -> Explanation {
    let source = Source::parse(source, &domain()).expect("source");
    let request = Request::parse(url, None, &[]).expect("request");
    explain(mesh, &source, &request)
}

#[test]
fn the_longest_prefix_and_then_exact_paths_win() {
    let mesh = mesh("");
    let e = run(&mesh, "web/frontend", "http://orders.shop/api/items");
    assert_eq!(e.outcome, Outcome::Forwarded);
    let route = e.route.as_ref().expect("route");
    assert_eq!(
        (route.name.as_str(), route.rule, route.audience),
        ("shop/orders-split", 0, "producer")
    );
    assert_eq!(route.matched, "path prefix /api");

    let e = run(&mesh, "web/frontend", "http://orders.shop/api/health");
    let route = e.route.as_ref().expect("route");
    assert_eq!((route.rule, route.rule_name.as_deref()), (1, Some("exact")));
    // A rule without backends sends to its parent service.
    assert_eq!(e.backends.len(), 1);
    assert_eq!(e.backends[0].service, "shop/orders");
}

#[test]
fn weights_become_shares_and_the_rule_s_resilience_applies() {
    let e = run(&mesh(""), "web/frontend", "http://orders.shop/api/items");
    let shares: Vec<_> = e
        .backends
        .iter()
        .map(|b| (b.service.as_str(), b.weight, b.share_percent))
        .collect();
    assert_eq!(
        shares,
        [("shop/orders", 90, 90.0), ("shop/orders-v2", 10, 10.0)]
    );
    // The rule's settings over each backend service's own, as the proxy applies them.
    let r = e.backends[0].resilience.as_ref().expect("resilience");
    assert_eq!(r.request_timeout_ms, Some(2000));
    assert_eq!(r.max_retries, 3);
    assert_eq!(r.retry_on, ["connect-failure", "503"]);
    assert_eq!(r.connect_timeout_ms, 1000);
    // orders-v2's requests keep orders-v2's own connect timeout, under the rule's.
    let v2 = e.backends[1].resilience.as_ref().expect("resilience");
    assert_eq!(v2.connect_timeout_ms, 250);
    assert_eq!(v2.request_timeout_ms, Some(2000));
}

#[test]
fn no_matching_rule_is_a_404_and_zero_weights_a_500() {
    let mesh = mesh("");
    let e = run(&mesh, "web/frontend", "http://orders.shop/other");
    assert_eq!(e.outcome, Outcome::NoRouteMatched);
    assert!(e.route.is_none() && e.backends.is_empty());

    let e = run(&mesh, "web/frontend", "http://orders.shop/old/x");
    assert_eq!(e.outcome, Outcome::NoBackend);
    assert_eq!(e.backends[0].weight, 0);
}

#[test]
fn a_service_without_routes_goes_to_itself_and_an_unknown_host_is_not_meshed() {
    let mesh = mesh("");
    let e = run(&mesh, "web/frontend", "http://orders-v2.shop/anything");
    assert_eq!(e.outcome, Outcome::Forwarded);
    assert!(e.route.is_none());
    assert_eq!(e.backends[0].service, "shop/orders-v2");

    let e = run(&mesh, "web/frontend", "http://elsewhere.example/");
    assert_eq!(e.outcome, Outcome::NotMeshed);
    assert!(e.service.is_none());
}

#[test]
fn the_virtual_address_names_the_service_as_capture_does() {
    let e = run(&mesh(""), "web/frontend", "http://10.96.0.10:80/api/x");
    assert_eq!(e.service.as_deref(), Some("shop/orders"));
    assert_eq!(e.resolved_by, Some("virtual_address"));
    assert_eq!(e.route.expect("route").rule, 0);
}

#[test]
fn the_destination_s_policies_decide_for_the_source_identity() {
    let mesh = mesh("");
    let e = run(&mesh, "web/frontend", "http://orders.shop/api/health");
    let authz = &e.backends[0].authorization;
    assert_eq!(authz.decision, "allowed");
    assert_eq!(authz.policy.as_deref(), Some("shop/orders-callers"));

    let e = run(&mesh, "billing/batch", "http://orders.shop/api/health");
    assert_eq!(e.backends[0].authorization.decision, "denied");
    assert_eq!(e.outcome, Outcome::Denied);

    // A plaintext caller is listed by no policy.
    let e = run(&mesh, "web", "http://orders.shop/api/health");
    assert_eq!(e.backends[0].authorization.decision, "denied");

    // orders-v2 has no policy: open, so a split to it still forwards.
    let e = run(&mesh, "billing/batch", "http://orders.shop/api/items");
    assert_eq!(e.backends[1].authorization.decision, "open");
    assert_eq!(e.outcome, Outcome::Forwarded);
}

#[test]
fn endpoints_are_listed_with_health_zone_and_what_the_proxy_adds() {
    let mut mesh = mesh("");
    let e = run(&mesh, "web/frontend", "http://orders.shop/api/health");
    let endpoints: Vec<_> = e.backends[0]
        .endpoints
        .iter()
        .map(|ep| (ep.address.as_str(), ep.state.as_str(), ep.zone.as_str()))
        .collect();
    assert_eq!(
        endpoints,
        [
            ("10.0.0.5:8080", "healthy", "a"),
            ("10.0.0.6:8080", "unhealthy", "b"),
            // A terminating Pod, as the control plane lists it on Kubernetes.
            ("10.0.0.7:8080", "draining", "b")
        ]
    );
    let orders = ResourceName::new("shop", "orders").expect("name");
    mesh.endpoint_states
        .insert((orders, "10.0.0.5:8080".to_owned()), "ejected".to_owned());
    let e = run(&mesh, "web/frontend", "http://orders.shop/api/health");
    assert_eq!(e.backends[0].endpoints[0].state, "ejected");
}

#[test]
fn a_consumer_route_replaces_the_producer_s_for_its_namespace_only() {
    let consumer = r#"
kind: HTTPRoute
metadata: {name: web-orders, namespace: web}
spec:
  parentRefs: [{name: orders, namespace: shop}]
  rules:
  - backendRefs: [{name: orders-v2, namespace: shop}]
"#;
    let mesh = mesh(consumer);
    let e = run(&mesh, "web/frontend", "http://orders.shop/other");
    let route = e.route.as_ref().expect("route");
    assert_eq!(
        (route.name.as_str(), route.audience),
        ("web/web-orders", "consumer")
    );
    assert_eq!(e.backends[0].service, "shop/orders-v2");
    // Another namespace still gets the producer's routes, and their 404.
    let e = run(&mesh, "billing/batch", "http://orders.shop/other");
    assert_eq!(e.outcome, Outcome::NoRouteMatched);
}

#[test]
fn grpc_calls_match_by_method() {
    let mesh = mesh("");
    let e = run(
        &mesh,
        "web/frontend",
        "grpc://payments.shop/shop.Payments/Charge",
    );
    assert_eq!(e.outcome, Outcome::Forwarded);
    let route = e.route.as_ref().expect("route");
    assert_eq!(
        (route.kind, route.matched.as_str()),
        ("GRPCRoute", "method shop.Payments/Charge")
    );
    assert_eq!(e.port, Some(9090));
    let e = run(
        &mesh,
        "web/frontend",
        "grpc://payments.shop/shop.Payments/Refund",
    );
    assert_eq!(e.outcome, Outcome::NoRouteMatched);
}

#[test]
fn headers_and_methods_are_read_as_curl_takes_them() {
    let request = Request::parse(
        "http://orders.shop:80/api?v=2",
        Some("POST"),
        &["x-canary: 1".to_owned()],
    )
    .expect("request");
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.port, Some(80));
    assert_eq!(request.query.as_deref(), Some("v=2"));
    assert_eq!(request.headers["x-canary"], "1");
    assert!(Request::parse("ftp://x/", None, &[]).is_err());
    assert!(Request::parse("grpc://x/not-a-method", None, &[]).is_err());
    assert!(Request::parse("http://x/", None, &["no-colon".to_owned()]).is_err());
    assert!(Source::parse("a/b/c", &domain()).is_err());
}

#[test]
fn the_text_names_route_backends_policy_and_endpoints() {
    let e = run(&mesh(""), "web/frontend", "http://orders.shop/api/items");
    let text = render(&e);
    for expected in [
        "route    HTTPRoute shop/orders-split rule 0 (api)",
        "backend  shop/orders:80  weight 90 (90%)",
        "authz    allowed by shop/orders-callers",
        "endpoint 10.0.0.6:8080",
        "timeouts request 2000ms",
    ] {
        assert!(text.contains(expected), "{expected:?} not in\n{text}");
    }
    let json = serde_json::to_value(&e).expect("json");
    assert_eq!(json["outcome"], "forwarded");
    assert_eq!(json["route"]["name"], "shop/orders-split");
}
