//! Applying routes: their references are checked against the mesh, their creation
//! time is kept, and what `get` prints applies unchanged.

use std::sync::Arc;

use tonic::Code;
use weft_proto::document::{self, Document};
use weft_proto::resource::Kind;
use weft_proto::v1;

use super::*;
use crate::store::EmbeddedStore;

const SERVICES: &str = "kind: Service
metadata: {name: orders, namespace: shop}
spec:
  ports:
  - {name: http, port: 80, protocol: http1}
  - {name: grpc, port: 9090, protocol: grpc}
  - {name: db, port: 5432, protocol: tcp}
---
kind: Service
metadata: {name: orders-v2, namespace: shop}
spec:
  ports: [{port: 8080, protocol: http1}]
---
kind: Service
metadata: {name: cache, namespace: shop}
spec:
  ports: [{port: 6379, protocol: tcp}]
";

const ROUTE: &str = "kind: HTTPRoute
metadata: {name: split, namespace: shop}
spec:
  parentRefs: [{name: orders, port: 80}]
  rules:
  - matches: [{path: {value: /api}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: orders-v2}, percent: 5}
    backendRefs: [{name: orders, weight: 90}, {name: orders-v2, port: 8080, weight: 10}]
";

fn resources(text: &str) -> Vec<v1::Resource> {
    document::parse(text)
        .expect("parse")
        .iter()
        .map(Document::to_resource)
        .collect()
}

fn applier() -> (Applier, Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
    (Applier::new(store.clone()), store, dir)
}

fn outcomes(results: &[v1::ApplyResult]) -> Vec<v1::apply_result::Outcome> {
    results
        .iter()
        .map(|r| v1::apply_result::Outcome::try_from(r.outcome).expect("an outcome"))
        .collect()
}

async fn stored_route(store: &Arc<dyn Store>, name: &str) -> v1::HttpRoute {
    let record = store
        .get(Kind::HttpRoute, name)
        .await
        .expect("read")
        .expect("stored");
    <v1::HttpRoute as prost::Message>::decode(record.body.as_slice()).expect("decode")
}

/// The error of applying `text` after the services, as a client sees it.
async fn refused(text: &str) -> String {
    let (applier, _, _dir) = applier();
    applier.apply(&resources(SERVICES)).await.expect("services");
    let status = Status::from(applier.apply(&resources(text)).await.expect_err("refused"));
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    status.message().to_owned()
}

#[tokio::test]
async fn a_route_applies_with_its_services_and_keeps_its_creation_time() {
    let (applier, store, _dir) = applier();
    let both = format!("{SERVICES}---\n{ROUTE}");
    let first = applier.apply(&resources(&both)).await.expect("applied");
    assert_eq!(outcomes(&first)[3], v1::apply_result::Outcome::Created);
    let created = stored_route(&store, "shop/split")
        .await
        .creation_timestamp_ms;
    assert!(created > 0, "stamped");

    let again = applier.apply(&resources(ROUTE)).await.expect("applied");
    assert_eq!(outcomes(&again), [v1::apply_result::Outcome::Unchanged]);

    let changed = ROUTE.replace("weight: 90", "weight: 50");
    let updated = applier.apply(&resources(&changed)).await.expect("applied");
    assert_eq!(outcomes(&updated), [v1::apply_result::Outcome::Updated]);
    assert_eq!(
        stored_route(&store, "shop/split")
            .await
            .creation_timestamp_ms,
        created
    );
}

#[tokio::test]
async fn what_get_prints_applies_unchanged() {
    let (applier, store, _dir) = applier();
    let grpc = "kind: GRPCRoute
metadata: {name: rpc, namespace: shop}
spec:
  parentRefs: [{name: orders, port: 9090}]
  rules:
  - matches: [{method: {service: shop.Orders, method: Get}}]
    timeouts: {request: 90s}
";
    applier
        .apply(&resources(&format!("{SERVICES}---\n{ROUTE}---\n{grpc}")))
        .await
        .expect("applied");
    for (kind, name) in [
        (Kind::HttpRoute, "shop/split"),
        (Kind::GrpcRoute, "shop/rpc"),
    ] {
        let record = store.get(kind, name).await.expect("read").expect("stored");
        let printed = Document::from_resource(&v1::Resource {
            name: record.name.clone(),
            version: record.version,
            body: Some(prost_types::Any {
                type_url: kind.type_url().to_owned(),
                value: record.body.clone(),
            }),
        })
        .expect("document");
        assert!(printed.metadata().creation_timestamp.is_some());
        let yaml = document::to_yaml(&[printed]).expect("yaml");
        let results = applier.apply(&resources(&yaml)).await.expect("applied");
        assert_eq!(
            outcomes(&results),
            [v1::apply_result::Outcome::Unchanged],
            "{yaml}"
        );
    }
}

#[tokio::test]
async fn a_route_to_a_missing_service_is_refused_naming_the_field() {
    let message = refused(&ROUTE.replace("name: orders, port: 80", "name: ghost")).await;
    assert_eq!(
        message,
        "HTTPRoute shop/split: spec.parentRefs[0]: service shop/ghost does not exist (apply the Service first, or in the same request)"
    );
    let message = refused(&ROUTE.replace(
        "{name: orders-v2, port: 8080",
        "{name: orders-v3, port: 8080",
    ))
    .await;
    assert!(
        message.contains("spec.rules[0].backendRefs[1]: service shop/orders-v3 does not exist"),
        "{message}"
    );
    let message = refused(&ROUTE.replace(
        "backendRef: {name: orders-v2}",
        "backendRef: {name: shadow}",
    ))
    .await;
    assert!(
        message.contains("spec.rules[0].filters[0].requestMirror.backendRef: service shop/shadow"),
        "{message}"
    );
}

#[tokio::test]
async fn ports_must_exist_and_carry_the_route_kind() {
    let message = refused(&ROUTE.replace("port: 80}", "port: 81}")).await;
    assert!(
        message.contains("spec.parentRefs[0].port: 81 is not a port of service shop/orders"),
        "{message}"
    );
    let message = refused(&ROUTE.replace("port: 80}", "port: 5432}")).await;
    assert!(
        message.contains("port 5432 of service shop/orders is tcp"),
        "{message}"
    );
    let message = refused(&ROUTE.replace("{name: orders, port: 80}", "{name: cache}")).await;
    assert!(
        message.contains("spec.parentRefs[0]: service shop/cache has no port"),
        "{message}"
    );
    let message = refused(&ROUTE.replace("port: 8080, weight", "port: 9999, weight")).await;
    assert!(
        message.contains("spec.rules[0].backendRefs[1]: port 9999 is not a port"),
        "{message}"
    );
    let grpc_on_http1 = "kind: GRPCRoute
metadata: {name: rpc, namespace: shop}
spec:
  parentRefs: [{name: orders, port: 80}]
  rules: [{}]
";
    let message = refused(grpc_on_http1).await;
    assert!(
        message.contains("is http1; a GRPCRoute needs http2 or grpc"),
        "{message}"
    );
}

#[tokio::test]
async fn an_invalid_route_names_the_resource_and_the_field() {
    let message = refused(&ROUTE.replace(
        "path: {value: /api}",
        "path: {type: RegularExpression, value: '/api(['}",
    ))
    .await;
    assert!(
        message.starts_with("resources[0]: HTTPRoute shop/split: spec.rules[0].matches[0].path.value: \"/api([\" is not a regular expression"),
        "{message}"
    );
}
