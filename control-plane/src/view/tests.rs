use super::*;
use crate::store::{Record, Registration};

fn service(name: &str, version: u64, body: &[u8]) -> Record {
    Record {
        kind: Kind::Service,
        name: name.to_owned(),
        version,
        body: body.to_vec(),
    }
}

fn registration(node: &str, version: u64, port: u32) -> Registration {
    let workload = v1::Workload {
        namespace: "shop".into(),
        service: "orders".into(),
        address: "10.0.0.1".into(),
        ports: vec![v1::WorkloadPort {
            name: String::new(),
            port,
        }],
        ..Default::default()
    };
    Registration {
        node_id: node.to_owned(),
        version,
        generation: version,
        workload: workload.encode_to_vec(),
    }
}

fn version(view: &View, kind: Kind, name: &str) -> Option<u64> {
    view.of(kind).get(name).map(|e| e.version)
}

fn endpoints_of(view: &View, name: &str) -> Vec<u32> {
    let entry = view
        .of(Kind::Endpoints)
        .get(name)
        .cloned()
        .expect("present");
    let message = v1::Endpoints::decode(entry.body.value.as_slice()).expect("decodes");
    message.endpoints.iter().map(|e| e.port).collect()
}

#[test]
fn stored_resources_keep_their_store_versions() {
    let contents = Contents {
        revision: 3,
        records: vec![
            service("shop/orders", 2, b"a"),
            service("shop/users", 3, b"b"),
        ],
        registrations: vec![],
    };
    let view = build(&contents, None, &Defaults::default());
    assert_eq!(version(&view, Kind::Service, "shop/orders"), Some(2));
    assert_eq!(version(&view, Kind::Service, "shop/users"), Some(3));
    assert!(view.of(Kind::Endpoints).is_empty());
}

#[test]
fn registrations_become_endpoints_and_their_removal_gets_a_newer_version() {
    let mut contents = Contents {
        revision: 5,
        records: vec![service("shop/orders", 1, b"a")],
        registrations: vec![
            registration("pod-a", 4, 8080),
            registration("pod-b", 5, 8081),
        ],
    };
    let first = build(&contents, None, &Defaults::default());
    assert_eq!(version(&first, Kind::Endpoints, "shop/orders"), Some(5));
    assert_eq!(endpoints_of(&first, "shop/orders"), [8080, 8081]);

    // pod-b leaves at revision 6: the newest part is now 4, older than what was served.
    contents.revision = 6;
    contents.registrations.pop();
    let second = build(&contents, Some(&first), &Defaults::default());
    assert_eq!(version(&second, Kind::Endpoints, "shop/orders"), Some(6));
    assert_eq!(endpoints_of(&second, "shop/orders"), [8080]);
    // Unchanged resources keep their version and share their body.
    assert_eq!(version(&second, Kind::Service, "shop/orders"), Some(1));

    // The last one leaves: the resource disappears.
    contents.revision = 7;
    contents.registrations.clear();
    let third = build(&contents, Some(&second), &Defaults::default());
    assert!(third.of(Kind::Endpoints).is_empty());
}

#[test]
fn a_rebuild_after_restart_gives_unchanged_resources_the_same_versions() {
    let contents = Contents {
        revision: 9,
        records: vec![service("shop/orders", 2, b"a")],
        registrations: vec![registration("pod-a", 7, 8080)],
    };
    let before = build(&contents, None, &Defaults::default());
    let after_restart = build(&contents, None, &Defaults::default());
    assert_eq!(before.types, after_restart.types);
}

#[test]
fn health_verdicts_mark_declared_and_registered_endpoints() {
    let declared = v1::Endpoints {
        namespace: "shop".into(),
        name: "orders".into(),
        endpoints: vec![
            v1::Endpoint {
                address: "10.0.0.7".into(),
                port: 80,
                ..Default::default()
            },
            v1::Endpoint {
                address: "10.0.0.8".into(),
                port: 80,
                ..Default::default()
            },
        ],
    };
    let mut sick = registration("node-b", 4, 8081);
    let mut workload = v1::Workload::decode(sick.workload.as_slice()).expect("decodes");
    workload.health = "unhealthy".into();
    sick.workload = workload.encode_to_vec();
    let contents = Contents {
        revision: 4,
        records: vec![Record {
            kind: Kind::Endpoints,
            name: "shop/orders".into(),
            version: 2,
            body: declared.encode_to_vec(),
        }],
        registrations: vec![registration("node-a", 3, 8080), sick],
    };
    let healthy = |view: &View| -> Vec<String> {
        let entry = view
            .of(Kind::Endpoints)
            .get("shop/orders")
            .cloned()
            .expect("present");
        v1::Endpoints::decode(entry.body.value.as_slice())
            .expect("decodes")
            .endpoints
            .iter()
            .map(|e| format!("{}:{} {}", e.address, e.port, e.health))
            .collect()
    };
    let plain = build(&contents, None, &Defaults::default());
    assert_eq!(
        healthy(&plain),
        [
            "10.0.0.7:80 ",
            "10.0.0.8:80 ",
            "10.0.0.1:8080 ",
            "10.0.0.1:8081 unhealthy"
        ]
    );
    let unhealthy = BTreeSet::from([(
        "shop/orders".to_owned(),
        "10.0.0.8:80".parse().expect("addr"),
    )]);
    let checked = build_checked(&contents, Some(&plain), &unhealthy, &Defaults::default());
    assert_eq!(healthy(&checked)[1], "10.0.0.8:80 unhealthy");
    assert!(
        version(&checked, Kind::Endpoints, "shop/orders")
            > version(&plain, Kind::Endpoints, "shop/orders"),
        "a verdict is a change proxies are pushed"
    );
}
