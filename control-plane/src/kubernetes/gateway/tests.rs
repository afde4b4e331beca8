use serde_json::json;

use super::*;

fn object(kind: RouteKind, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": kind.kind(),
        "metadata": {"name": "orders-canary", "namespace": "shop", "generation": 3,
                     "creationTimestamp": "2026-01-02T03:04:05Z", "resourceVersion": "41"},
        "spec": spec,
    }))
    .expect("a route object")
}

/// A parentRef as the API server returns it once the CRD's defaults are applied.
fn service_parent(name: &str) -> Value {
    json!({"group": "", "kind": "Service", "name": name, "port": 80})
}

fn backend(name: &str, weight: u32) -> Value {
    json!({"group": "", "kind": "Service", "name": name, "port": 80, "weight": weight})
}

fn canary(parents: Vec<Value>) -> DynamicObject {
    object(
        RouteKind::Http,
        json!({
            "parentRefs": parents,
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"},
                             "headers": [{"type": "Exact", "name": "x-canary", "value": "1"}]}],
                "backendRefs": [backend("orders-v2", 1)],
            }, {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [backend("orders-v1", 90), backend("orders-v2", 10)],
            }],
        }),
    )
}

fn served(names: &[&str]) -> Served {
    names
        .iter()
        .map(|name| (format!("shop/{name}"), vec![(80, Protocol::Http1)]))
        .collect()
}

fn http(translated: &Translated) -> &model::HttpRoute {
    match &translated.route {
        Ok(Body::HttpRoute(route)) => route,
        other => panic!("expected an accepted HTTPRoute, got {other:?}"),
    }
}

#[test]
fn a_mesh_route_reads_as_weftctl_apply_reads_its_document() {
    let translated =
        translate(RouteKind::Http, &canary(vec![service_parent("orders")])).expect("a mesh route");
    let route = http(&translated);
    assert_eq!(route.name.to_string(), "shop/orders-canary");
    assert_eq!(route.parents.len(), 1);
    assert_eq!(route.parents[0].service.to_string(), "shop/orders");
    assert_eq!(route.parents[0].port, Some(80));
    assert_eq!(route.rules.len(), 2);
    let weights: Vec<(String, u32)> = route.rules[1]
        .backends()
        .iter()
        .map(|b| (b.service.to_string(), b.weight))
        .collect();
    assert_eq!(
        weights,
        [
            ("shop/orders-v1".to_owned(), 90),
            ("shop/orders-v2".to_owned(), 10)
        ]
    );
    // The object's creation time breaks precedence ties, as the Gateway API says.
    assert_eq!(route.creation_timestamp_ms, 1_767_323_045_000);
    assert_eq!(translated.parents[0].service, "shop/orders");
}

#[test]
fn routes_of_gateways_are_not_the_meshes() {
    // The Gateway API's defaults (group gateway.networking.k8s.io, kind Gateway)
    // apply to a parent that leaves them out.
    let gateway_only = canary(vec![
        json!({"name": "public"}),
        json!({"group": GROUP, "kind": "Gateway", "name": "edge", "sectionName": "https"}),
    ]);
    assert_eq!(translate(RouteKind::Http, &gateway_only), None);

    // A route of both keeps only its Service parents: the Gateway's `sectionName`,
    // which Weft does not support, is not the mesh's business.
    let both = canary(vec![
        json!({"group": GROUP, "kind": "Gateway", "name": "edge", "sectionName": "https"}),
        json!({"group": "core", "kind": "Service", "name": "orders"}),
    ]);
    let translated = translate(RouteKind::Http, &both).expect("a mesh route");
    assert_eq!(translated.parents.len(), 1);
    assert_eq!(
        http(&translated).parents[0].service.to_string(),
        "shop/orders"
    );
}

#[test]
fn an_invalid_route_is_refused_naming_the_field() {
    let bad_regex = object(
        RouteKind::Http,
        json!({
            "parentRefs": [service_parent("orders")],
            "rules": [{"matches": [{"path": {"type": "RegularExpression", "value": "/(orders"}}]}],
        }),
    );
    let translated = translate(RouteKind::Http, &bad_regex).expect("a mesh route");
    let message = translated.route.clone().expect_err("a bad regex");
    assert!(
        message.starts_with("spec.rules[0].matches[0].path"),
        "{message}"
    );
    let verdict = judge(&translated, &served(&["orders"]), 3);
    assert_eq!(verdict.generation, 3);
    let refusal = verdict.parents[0]
        .accepted
        .clone()
        .expect_err("not accepted");
    assert_eq!(refusal.reason, UNSUPPORTED_VALUE);
    assert_eq!(refusal.message, message);

    // A field of the Gateway API that Weft does not implement is named, not ignored.
    let persistent = object(
        RouteKind::Http,
        json!({
            "parentRefs": [service_parent("orders")],
            "rules": [{"sessionPersistence": {"type": "Cookie"}}],
        }),
    );
    let message = translate(RouteKind::Http, &persistent)
        .expect("a mesh route")
        .route
        .expect_err("unsupported");
    assert!(message.contains("sessionPersistence"), "{message}");
}

#[test]
fn a_missing_backend_leaves_the_route_accepted_but_unresolved() {
    let translated =
        translate(RouteKind::Http, &canary(vec![service_parent("orders")])).expect("a mesh route");
    let verdict = judge(&translated, &served(&["orders", "orders-v1"]), 3);
    let parent = &verdict.parents[0];
    assert_eq!(parent.accepted, Ok(()));
    let refusal = parent.resolved.clone().expect_err("orders-v2 is missing");
    assert_eq!(refusal.reason, BACKEND_NOT_FOUND);
    assert!(
        refusal
            .message
            .starts_with("spec.rules[0].backendRefs[0]: Service shop/orders-v2"),
        "{}",
        refusal.message
    );

    let everything = judge(
        &translated,
        &served(&["orders", "orders-v1", "orders-v2"]),
        3,
    );
    assert_eq!(everything.parents[0].resolved, Ok(()));
}

#[test]
fn a_parent_outside_the_mesh_is_not_accepted() {
    let translated =
        translate(RouteKind::Http, &canary(vec![service_parent("orders")])).expect("a mesh route");
    let verdict = judge(&translated, &served(&["orders-v1", "orders-v2"]), 3);
    let refusal = verdict.parents[0].accepted.clone().expect_err("no parent");
    assert_eq!(refusal.reason, NO_MATCHING_PARENT);
    assert_eq!(verdict.parents[0].parent_ref, service_parent("orders"));
}

#[test]
fn a_grpc_route_reads_the_same_way() {
    let route = object(
        RouteKind::Grpc,
        json!({
            "parentRefs": [{"group": "", "kind": "Service", "name": "payments"}],
            "rules": [{
                "matches": [{"method": {"type": "Exact", "service": "shop.Payments", "method": "Refund"}}],
                "backendRefs": [backend("payments-v2", 1)],
            }],
        }),
    );
    let translated = translate(RouteKind::Grpc, &route).expect("a mesh route");
    match &translated.route {
        Ok(Body::GrpcRoute(route)) => {
            assert_eq!(route.parents[0].service.to_string(), "shop/payments");
            assert_eq!(route.parents[0].port, None);
        }
        other => panic!("expected an accepted GRPCRoute, got {other:?}"),
    }
}

#[test]
fn a_parent_port_must_carry_the_route() {
    let translated =
        translate(RouteKind::Http, &canary(vec![service_parent("orders")])).expect("a mesh route");
    let mut tcp = served(&["orders-v1", "orders-v2"]);
    tcp.insert("shop/orders".to_owned(), vec![(80, Protocol::Tcp)]);
    let refusal = judge(&translated, &tcp, 3).parents[0]
        .accepted
        .clone()
        .expect_err("a tcp port");
    assert_eq!(refusal.reason, NO_MATCHING_PARENT);
    assert!(
        refusal
            .message
            .starts_with("spec.parentRefs[0].port: port 80 of Service shop/orders is tcp"),
        "{}",
        refusal.message
    );

    let mut other_port = served(&["orders-v1", "orders-v2"]);
    other_port.insert("shop/orders".to_owned(), vec![(8080, Protocol::Http1)]);
    let refusal = judge(&translated, &other_port, 3).parents[0]
        .accepted
        .clone()
        .expect_err("no port 80");
    assert!(
        refusal
            .message
            .starts_with("spec.parentRefs[0].port: 80 is not a port"),
        "{}",
        refusal.message
    );
}

#[test]
fn errors_number_parents_as_the_object_does() {
    // The Service parent is the object's second; the model sees it first.
    let route = canary(vec![
        json!({"group": GROUP, "kind": "Gateway", "name": "edge"}),
        json!({"group": "", "kind": "Service", "name": "Not_A_Name"}),
    ]);
    let translated = translate(RouteKind::Http, &route).expect("a mesh route");
    let message = translated.route.expect_err("a bad name");
    assert!(message.starts_with("spec.parentRefs[1]"), "{message}");
}
