use std::collections::BTreeMap;

use serde_json::json;

use super::*;

fn kube_service(value: serde_json::Value) -> KubeService {
    serde_json::from_value(value).expect("a Service")
}

fn slice(value: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(value).expect("an EndpointSlice")
}

/// Pods by `namespace/name` -> identity.
struct Known(BTreeMap<String, String>);

impl Pods for Known {
    fn identity(&self, namespace: &str, name: &str) -> Option<String> {
        self.0.get(&format!("{namespace}/{name}")).cloned()
    }
}

fn web() -> v1::Service {
    service(
        &kube_service(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7"],
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        })),
        "cluster.local",
    )
    .expect("servable")
    .expect("routed")
}

#[test]
fn a_service_keeps_its_ports_addresses_and_names() {
    let served = web();
    assert_eq!(served.namespace, "shop");
    assert_eq!(served.name, "web");
    assert_eq!(served.virtual_ips, ["10.96.0.7"]);
    assert_eq!(
        served.hostnames,
        ["web.shop.svc.cluster.local", "web.shop.svc", "web.shop"]
    );
    assert_eq!(served.ports.len(), 1);
    assert_eq!(served.ports[0].port, 80);
    assert_eq!(served.ports[0].protocol, "http1", "named http");
}

#[test]
fn protocol_comes_from_the_annotation_then_app_protocol_then_the_name() {
    let served = service(
        &kube_service(json!({
            "metadata": {"name": "api", "namespace": "shop",
                         "annotations": {"weft.io/protocols": "9000=grpc, legacy=tcp"}},
            "spec": {"clusterIP": "None", "ports": [
                {"name": "h2", "port": 81, "appProtocol": "kubernetes.io/h2c"},
                {"name": "rpc", "port": 82, "appProtocol": "grpc"},
                {"name": "grpc-web", "port": 83},
                {"name": "legacy", "port": 84, "appProtocol": "http"},
                {"name": "raw", "port": 9000},
                {"name": "db", "port": 5432, "appProtocol": "postgresql"},
                {"name": "dns", "port": 53, "protocol": "UDP"}
            ]}
        })),
        "cluster.local",
    )
    .expect("servable")
    .expect("routed");
    let protocols: Vec<(&str, &str)> = served
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.protocol.as_str()))
        .collect();
    assert_eq!(
        protocols,
        [
            ("h2", "http2"),
            ("rpc", "grpc"),
            ("grpc-web", "grpc"),
            ("legacy", "tcp"),
            ("raw", "grpc"),
            ("db", "tcp"),
        ],
        "UDP ports are left out"
    );
    assert!(served.virtual_ips.is_empty(), "a headless Service has none");
}

#[test]
fn a_bad_annotation_names_itself_and_external_names_are_not_routed() {
    let bad = service(
        &kube_service(json!({
            "metadata": {"name": "api", "namespace": "shop",
                         "annotations": {"weft.io/protocols": "http=quic"}},
            "spec": {"ports": [{"name": "http", "port": 80}]}
        })),
        "cluster.local",
    )
    .expect_err("quic is no protocol");
    assert!(bad.to_string().contains("weft.io/protocols"), "{bad}");
    assert!(bad.to_string().contains("quic"), "{bad}");
    let external = service(
        &kube_service(json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "db.example"}
        })),
        "cluster.local",
    );
    assert_eq!(external, Ok(None));
}

fn slice_of(endpoints: serde_json::Value) -> EndpointSlice {
    slice(json!({
        "metadata": {"name": "web-abc", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints
    }))
}

#[test]
fn ready_endpoints_carry_zone_and_the_identity_of_meshed_pods() {
    let one = slice_of(json!([
        {"addresses": ["10.244.0.5"], "zone": "zone-a",
         "conditions": {"ready": true, "serving": true, "terminating": false},
         "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "shop"}},
        {"addresses": ["10.244.0.6"],
         "conditions": {"ready": false, "serving": false},
         "targetRef": {"kind": "Pod", "name": "web-2", "namespace": "shop"}},
        {"addresses": ["10.244.0.7"],
         "targetRef": {"kind": "Pod", "name": "plain", "namespace": "shop"}}
    ]));
    let pods = Known(BTreeMap::from([
        (
            "shop/web-1".to_owned(),
            "spiffe://cluster.local/ns/shop/sa/web".to_owned(),
        ),
        (
            "shop/web-2".to_owned(),
            "spiffe://cluster.local/ns/shop/sa/web".to_owned(),
        ),
    ]));
    let served = endpoints(&web(), &[&one], &pods);
    let got: Vec<(&str, u32, &str, &str, &str)> = served
        .endpoints
        .iter()
        .map(|e| {
            (
                e.address.as_str(),
                e.port,
                e.port_name.as_str(),
                e.identity.as_str(),
                e.health.as_str(),
            )
        })
        .collect();
    let web = "spiffe://cluster.local/ns/shop/sa/web";
    assert_eq!(
        got,
        [
            ("10.244.0.5", 8080, "http", web, ""),
            ("10.244.0.6", 8080, "http", web, "unhealthy"),
            ("10.244.0.7", 8080, "http", "", ""),
        ],
        "not ready is listed unhealthy (its sidecar learns its services from it); \
         no condition means ready; an unmeshed pod has no identity"
    );
    assert_eq!(
        served.endpoints[0]
            .locality
            .as_ref()
            .map(|l| l.zone.as_str()),
        Some("zone-a")
    );
}

/// (address, health) of each endpoint served.
fn health(served: &v1::Endpoints) -> Vec<(&str, &str)> {
    served
        .endpoints
        .iter()
        .map(|e| (e.address.as_str(), e.health.as_str()))
        .collect()
}

fn draining(endpoint: &v1::Endpoint) -> Option<&str> {
    endpoint.labels.get(DRAINING_LABEL).map(String::as_str)
}

#[test]
fn terminating_endpoints_drain_and_serve_only_when_nothing_else_is_ready() {
    let terminating = json!({"addresses": ["10.244.0.5"],
        "conditions": {"ready": false, "serving": true, "terminating": true}});
    let ready = json!({"addresses": ["10.244.0.6"],
        "conditions": {"ready": true, "serving": true, "terminating": false}});
    let stopping = json!({"addresses": ["10.244.0.7"],
        "conditions": {"ready": false, "serving": false, "terminating": true}});
    let all = slice_of(json!([terminating.clone(), ready, stopping.clone()]));
    let served = endpoints(&web(), &[&all], &Known(BTreeMap::new()));
    assert_eq!(
        health(&served),
        [
            ("10.244.0.5", "unhealthy"),
            ("10.244.0.6", ""),
            ("10.244.0.7", "unhealthy")
        ],
        "no new requests to a terminating pod"
    );

    // The serving one is draining, and says so; the one that no longer serves is
    // just unhealthy.
    let labels: Vec<Option<&str>> = served.endpoints.iter().map(draining).collect();
    assert_eq!(labels, [Some("true"), None, None]);

    let alone = slice_of(json!([terminating, stopping]));
    let served = endpoints(&web(), &[&alone], &Known(BTreeMap::new()));
    assert_eq!(
        health(&served),
        [("10.244.0.5", ""), ("10.244.0.7", "unhealthy")],
        "the last serving pod still answers"
    );
    let labels: Vec<Option<&str>> = served.endpoints.iter().map(draining).collect();
    assert_eq!(
        labels,
        [Some("true"), None],
        "still draining while it answers"
    );
}

#[test]
fn an_address_in_two_slices_takes_its_best_standing() {
    let not_ready = slice_of(json!([{"addresses": ["10.244.0.5"],
        "conditions": {"ready": false, "serving": false}}]));
    let ready = slice_of(json!([{"addresses": ["10.244.0.5"]}]));
    for order in [[&not_ready, &ready], [&ready, &not_ready]] {
        let served = endpoints(&web(), &order, &Known(BTreeMap::new()));
        assert_eq!(health(&served), [("10.244.0.5", "")]);
    }
}

#[test]
fn an_endpoint_in_two_slices_is_served_once_and_order_is_canonical() {
    let first = slice_of(json!([{"addresses": ["10.244.0.9"]}, {"addresses": ["10.244.0.2"]}]));
    let second = slice_of(json!([{"addresses": ["10.244.0.2"]}]));
    let one = endpoints(&web(), &[&first, &second], &Known(BTreeMap::new()));
    let other = endpoints(&web(), &[&second, &first], &Known(BTreeMap::new()));
    assert_eq!(one, other, "slice order does not change the bytes served");
    let addresses: Vec<&str> = one.endpoints.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(addresses, ["10.244.0.2", "10.244.0.9"]);
}

#[test]
fn only_pods_with_the_weft_sidecar_have_an_identity() {
    let pod = |containers: serde_json::Value, init: serde_json::Value| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "shop"},
            "spec": {"serviceAccountName": "web", "containers": containers,
                     "initContainers": init}
        }))
        .expect("a Pod")
    };
    let native_sidecar = pod(
        json!([{"name": "app"}]),
        json!([{"name": "weft-proxy", "restartPolicy": "Always"}]),
    );
    assert_eq!(
        pod_identity(&native_sidecar, "cluster.local").as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/web")
    );
    let plain = pod(json!([{"name": "app"}]), json!([]));
    assert_eq!(pod_identity(&plain, "cluster.local"), None);
}
