//! Also the fixtures of the authorization tests, which resolve policies over the
//! same pod.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use proptest::prelude::*;
use weft_proto::model::{MtlsMode, Protocol, ResourceName};

use super::{membership, strictness, Local, LocalPort, Owner};
use crate::config::{Workload, WorkloadPort};
use crate::snapshot::Snapshot;
use crate::static_config;

/// The pod of [`POD_MESH`].
pub fn pod() -> IpAddr {
    IpAddr::from([10, 0, 0, 5])
}

/// One pod (10.0.0.5, with a twin at 10.0.0.6) serving shop/web (STRICT) on 8080
/// and 9091, shop/admin (PERMISSIVE) on 9090, and both on 7070, as EndpointSlices
/// list them; each service has a policy without a port.
pub const POD_MESH: &str = "
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports:
  - {name: http, port: 80, protocol: http1}
  - {name: grpc, port: 90, protocol: grpc}
  - {name: both, port: 70, protocol: tcp}
  mtls: STRICT
---
kind: Service
metadata: {name: admin, namespace: shop}
spec: {ports: [{name: http, port: 81, protocol: http1}, {name: both, port: 71, protocol: tcp}]}
---
kind: Endpoints
metadata: {name: web, namespace: shop}
spec:
  endpoints:
  - {address: 10.0.0.5, port: 8080, portName: http}
  - {address: 10.0.0.5, port: 9091, portName: grpc}
  - {address: 10.0.0.5, port: 7070, portName: both}
  - {address: 10.0.0.6, port: 8080, portName: http}
---
kind: Endpoints
metadata: {name: admin, namespace: shop}
spec:
  endpoints:
  - {address: 10.0.0.5, port: 9090, portName: http}
  - {address: 10.0.0.5, port: 7070, portName: both}
---
kind: AuthorizationPolicy
metadata: {name: web-callers, namespace: shop}
spec: {service: web, allow: [spiffe://cluster.local/ns/shop/sa/frontend]}
---
kind: AuthorizationPolicy
metadata: {name: admin-callers, namespace: shop}
spec: {service: admin, allow: [spiffe://cluster.local/ns/shop/sa/ops]}
";

pub fn mesh(yaml: &str) -> Snapshot {
    static_config::parse(yaml, "test mesh").expect("a valid mesh")
}

/// `--service service` with `--workload-port name=port` for each of `ports`.
pub fn workload(service: &str, ports: &[(&str, u16)]) -> Workload {
    Workload {
        service: service.into(),
        address: IpAddr::from([127, 0, 0, 1]),
        ports: ports
            .iter()
            .map(|(name, port)| WorkloadPort {
                name: (*name).into(),
                port: *port,
            })
            .collect(),
        region: String::new(),
        zone: String::new(),
        labels: BTreeMap::new(),
        weight: 1,
    }
}

fn owner(service: &str, ports: &[u16]) -> Owner {
    Owner {
        service: ResourceName::parse(service).expect("name"),
        ports: ports.to_vec(),
    }
}

fn served(local: &Local, port: u16) -> (Option<Protocol>, MtlsMode, &str) {
    let served = local.port(port);
    (served.protocol, served.mtls, &served.service)
}

#[test]
fn each_service_owns_the_ports_its_endpoints_at_the_address_name() {
    let local = membership(&mesh(POD_MESH), pod());
    let ports: Vec<u16> = local.ports.keys().copied().collect();
    assert_eq!(ports, [7070, 8080, 9090, 9091]);
    assert_eq!(local.port(8080).owners, [owner("shop/web", &[80])]);
    let web = (MtlsMode::Strict, "shop/web");
    assert_eq!(served(&local, 8080), (Some(Protocol::Http1), web.0, web.1));
    assert_eq!(served(&local, 9091), (Some(Protocol::Grpc), web.0, web.1));
    assert_eq!(local.port(9090).owners, [owner("shop/admin", &[81])]);
    assert_eq!(
        served(&local, 9090),
        (Some(Protocol::Http1), MtlsMode::Permissive, "shop/admin")
    );
    // A port no service owns has none: PERMISSIVE, detected, unlabelled.
    assert_eq!(local.port(15020), &LocalPort::default());
    let services: Vec<String> = local.services().iter().map(|s| s.to_string()).collect();
    assert_eq!(services, ["shop/admin", "shop/web"]);

    let twin = membership(&mesh(POD_MESH), IpAddr::from([10, 0, 0, 6]));
    assert_eq!(twin.ports.keys().copied().collect::<Vec<_>>(), [8080]);
    assert_eq!(
        membership(&mesh(POD_MESH), IpAddr::from([10, 0, 0, 7])),
        Local::default(),
        "a pod in no slice serves nothing"
    );
}

#[test]
fn a_pod_not_ready_or_terminating_still_serves_its_services() {
    let listed = "{address: 10.0.0.5, port: 8080, portName: http}";
    let unhealthy = POD_MESH.replace(listed, &listed.replace('}', ", health: unhealthy}"));
    assert_ne!(unhealthy, POD_MESH);
    let local = membership(&mesh(&unhealthy), pod());
    assert_eq!(local, membership(&mesh(POD_MESH), pod()));
}

#[test]
fn a_shared_port_takes_the_strictest_mode_and_the_first_name() {
    let local = membership(&mesh(POD_MESH), pod());
    assert_eq!(
        local.port(7070).owners,
        [owner("shop/admin", &[71]), owner("shop/web", &[70])]
    );
    assert_eq!(
        served(&local, 7070),
        (Some(Protocol::Tcp), MtlsMode::Strict, "shop/admin"),
        "STRICT beats PERMISSIVE; the first name declares and labels"
    );
    // PERMISSIVE serves a DISABLED service's plaintext callers too, where DISABLED
    // would hand a PERMISSIVE service's mTLS to the app as it is.
    let relaxed = POD_MESH.replace("mtls: STRICT", "mtls: DISABLED");
    let local = membership(&mesh(&relaxed), pod());
    assert_eq!(local.port(7070).mtls, MtlsMode::Permissive);
    assert_eq!(local.port(8080).mtls, MtlsMode::Disabled);
}

#[test]
fn a_service_port_pair_on_one_target_port_are_both_served() {
    let alt = POD_MESH.replace(
        "  - {address: 10.0.0.5, port: 9091, portName: grpc}",
        "  - {address: 10.0.0.5, port: 8080, portName: grpc}",
    );
    let local = membership(&mesh(&alt), pod());
    assert_eq!(local.port(8080).owners, [owner("shop/web", &[80, 90])]);
    assert_eq!(
        local.port(8080).protocol,
        Some(Protocol::Http1),
        "port 80's"
    );
}

#[test]
fn a_service_the_proxy_does_not_hold_still_owns_its_ports() {
    let mut snapshot = mesh(POD_MESH);
    let web = ResourceName::parse("shop/web").expect("name");
    snapshot.services.remove(&web);
    let local = membership(&snapshot, pod());
    assert_eq!(local.port(8080).owners, [owner("shop/web", &[])]);
    assert_eq!(
        served(&local, 8080),
        (None, MtlsMode::Permissive, "shop/web")
    );
}

#[test]
fn flags_make_every_port_the_declared_service() {
    let flags = workload("web", &[("grpc", 15006), ("http", 15006), ("nope", 15007)]);
    let snapshot = mesh(POD_MESH);
    let local = Local::declared(&snapshot, "shop", &flags);
    assert_eq!(
        local.port(15006).owners,
        [owner("shop/web", &[90])],
        "the first flag wins"
    );
    assert_eq!(local.port(15006).protocol, Some(Protocol::Grpc));
    assert_eq!(local.port(15007).owners, [owner("shop/web", &[])]);
    for port in [15007, 9999] {
        assert_eq!(served(&local, port), (None, MtlsMode::Strict, "shop/web"));
    }
    // Endpoints of other services at the address change nothing: the flags name
    // the service (hosts share addresses, 127.0.0.1 above all).
    assert_eq!(local.port(9090), &local.other);

    let unknown = Local::declared(&Snapshot::default(), "shop", &flags);
    assert_eq!(
        served(&unknown, 9999),
        (None, MtlsMode::Permissive, "shop/web"),
        "the mode is not known yet"
    );
}

/// A mesh of `services` (number, mode) with `endpoints` (pod, service, port).
fn generated(services: &[(u8, u8)], endpoints: &[(u8, u8, u16)]) -> Snapshot {
    let modes = ["STRICT", "PERMISSIVE", "DISABLED"];
    let mut yaml = String::new();
    for (service, mode) in services {
        yaml += &format!(
            "---\nkind: Service\nmetadata: {{name: s{service}, namespace: shop}}\n\
             spec: {{ports: [{{port: 80, protocol: http1}}], mtls: {}}}\n",
            modes[usize::from(*mode) % 3]
        );
    }
    let mut by_service: BTreeMap<u8, BTreeSet<(u8, u16)>> = BTreeMap::new();
    for (pod, service, port) in endpoints {
        by_service
            .entry(*service)
            .or_default()
            .insert((*pod, *port));
    }
    for (service, listed) in by_service {
        yaml += &format!(
            "---\nkind: Endpoints\nmetadata: {{name: s{service}, namespace: shop}}\n\
             spec:\n  endpoints:\n"
        );
        for (pod, port) in listed {
            yaml += &format!("  - {{address: 10.0.0.{pod}, port: {port}}}\n");
        }
    }
    mesh(&yaml)
}

proptest! {
    /// What a pod learns depends on its own endpoints only; every one of them is
    /// there, and each port's mode is its strictest owner's.
    #[test]
    fn membership_is_exactly_the_pods_endpoints(
        services in proptest::collection::btree_map(0u8..6, 0u8..3, 1..6),
        endpoints in proptest::collection::vec((0u8..4, 0u8..6, 8080u16..8084), 0..24),
    ) {
        let services: Vec<(u8, u8)> = services.into_iter().collect();
        let endpoints: Vec<(u8, u8, u16)> = endpoints
            .into_iter()
            .filter(|(_, service, _)| services.iter().any(|(s, _)| s == service))
            .collect();
        let snapshot = generated(&services, &endpoints);
        let address = IpAddr::from([10, 0, 0, 1]);
        let local = membership(&snapshot, address);
        let own: Vec<_> = endpoints.iter().filter(|(pod, _, _)| *pod == 1).collect();
        for (_, service, port) in &own {
            let owned = local.port(*port);
            let expected = owner(&format!("shop/s{service}"), &[80]);
            prop_assert!(owned.owners.contains(&expected), "{owned:?}");
        }
        for (port, owned) in &local.ports {
            prop_assert!(owned.owners.windows(2).all(|w| w[0].service < w[1].service));
            for o in &owned.owners {
                let listed = own.iter().any(|(_, service, p)| {
                    p == port && o.service.name == format!("s{service}")
                });
                prop_assert!(listed, "{o:?} on {port} is not the pod's");
            }
            let strictest = owned
                .owners
                .iter()
                .map(|o| strictness(snapshot.services[&o.service].service.mtls))
                .max();
            prop_assert_eq!(Some(strictness(owned.mtls)), strictest);
            let first = owned.owners.first().map(|o| o.service.to_string());
            prop_assert_eq!(Some(owned.service.to_string()), first);
        }
        // Other pods' endpoints do not matter.
        let alone: Vec<_> = own.into_iter().copied().collect();
        prop_assert_eq!(&local, &membership(&generated(&services, &alone), address));
    }
}
