use super::*;
use crate::v1;

fn service() -> v1::Service {
    v1::Service {
        namespace: "shop".into(),
        name: "orders".into(),
        ports: vec![v1::ServicePort {
            name: "http".into(),
            port: 80,
            protocol: "http1".into(),
        }],
        virtual_ips: vec!["10.96.0.10".into()],
        hostnames: vec!["orders.shop".into()],
        load_balancer: String::new(),
        mtls: String::new(),
        health_check: None,
    }
}

fn endpoint(address: &str, port: u32) -> v1::Endpoint {
    v1::Endpoint {
        address: address.into(),
        port,
        ..Default::default()
    }
}

fn field_of(result: Result<Service, Invalid>) -> String {
    result.expect_err("must be invalid").field
}

#[test]
fn valid_service_converts_with_defaults() {
    let s = Service::try_from(&service()).expect("valid");
    assert_eq!(s.name.to_string(), "shop/orders");
    assert_eq!(s.ports[0].protocol, Protocol::Http1);
    assert_eq!(s.load_balancer.as_str(), "p2c_ewma");
    assert_eq!(Service::try_from(&s.to_proto()).expect("round trip"), s);
}

#[test]
fn service_rejects_each_bad_field_by_name() {
    let mut m = service();
    m.name = String::new();
    assert_eq!(field_of(Service::try_from(&m)), "name");

    let mut m = service();
    m.namespace = "Shop".into();
    assert_eq!(field_of(Service::try_from(&m)), "namespace");

    let mut m = service();
    m.ports[0].port = 0;
    assert_eq!(field_of(Service::try_from(&m)), "ports[0].port");

    let mut m = service();
    m.ports[0].port = 70_000;
    let err = Service::try_from(&m).expect_err("out of range");
    assert_eq!(
        err.to_string(),
        "ports[0].port: 70000 is out of range 1-65535"
    );

    let mut m = service();
    m.ports[0].protocol = "udp".into();
    assert_eq!(field_of(Service::try_from(&m)), "ports[0].protocol");

    let mut m = service();
    m.ports.push(m.ports[0].clone());
    m.ports[1].name = "other".into();
    assert_eq!(field_of(Service::try_from(&m)), "ports[1].port");

    let mut m = service();
    m.ports.push(v1::ServicePort {
        name: String::new(),
        port: 81,
        protocol: "tcp".into(),
    });
    assert_eq!(field_of(Service::try_from(&m)), "ports[1].name");

    let mut m = service();
    m.ports.clear();
    assert_eq!(field_of(Service::try_from(&m)), "ports");

    let mut m = service();
    m.virtual_ips.push("not-an-ip".into());
    assert_eq!(field_of(Service::try_from(&m)), "virtual_ips[1]");

    let mut m = service();
    m.hostnames.push("bad host".into());
    assert_eq!(field_of(Service::try_from(&m)), "hostnames[1]");

    let mut m = service();
    m.load_balancer = "Round-Robin".into();
    assert_eq!(field_of(Service::try_from(&m)), "load_balancer");

    let mut m = service();
    m.mtls = "strict".into();
    assert_eq!(field_of(Service::try_from(&m)), "mtls");
}

#[test]
fn mtls_modes_parse_and_default_to_permissive() {
    let mut m = service();
    assert_eq!(
        Service::try_from(&m).expect("valid").mtls,
        MtlsMode::Permissive
    );
    for mode in [MtlsMode::Strict, MtlsMode::Permissive, MtlsMode::Disabled] {
        m.mtls = mode.as_str().into();
        let s = Service::try_from(&m).expect("valid");
        assert_eq!(s.mtls, mode);
        assert_eq!(Service::try_from(&s.to_proto()).expect("round trip"), s);
    }
}

#[test]
fn unknown_policy_names_pass_the_syntax_check() {
    // Policy support is the proxy's business: the control plane only checks syntax.
    let mut m = service();
    m.load_balancer = "least_request".into();
    let s = Service::try_from(&m).expect("syntactically valid");
    assert_eq!(s.load_balancer.as_str(), "least_request");
}

#[test]
fn endpoints_validate_address_port_weight_health_and_duplicates() {
    let ok = v1::Endpoints {
        namespace: "shop".into(),
        name: "orders".into(),
        endpoints: vec![endpoint("10.0.0.1", 8080), endpoint("::1", 8080)],
    };
    let mut ok = ok;
    ok.endpoints[1].identity = "spiffe://cluster.local/ns/shop/sa/orders".into();
    let e = Endpoints::try_from(&ok).expect("valid");
    assert_eq!(e.endpoints[0].weight, 1);
    assert_eq!(e.endpoints[0].identity, None);
    assert_eq!(
        e.endpoints[1]
            .identity
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/orders")
    );
    assert_eq!(e.endpoints[1].address.to_string(), "[::1]:8080");
    assert_eq!(Endpoints::try_from(&e.to_proto()).expect("round trip"), e);

    let cases: [(v1::Endpoint, &str); 7] = [
        (
            v1::Endpoint {
                identity: "spiffe://cluster.local/workload".into(),
                ..endpoint("10.0.0.2", 80)
            },
            "endpoints[1].identity",
        ),
        (
            v1::Endpoint {
                identity: "orders".into(),
                ..endpoint("10.0.0.2", 80)
            },
            "endpoints[1].identity",
        ),
        (endpoint("10.0.0.300", 80), "endpoints[1].address"),
        (endpoint("10.0.0.2", 0), "endpoints[1].port"),
        (
            v1::Endpoint {
                weight: MAX_WEIGHT_PLUS_ONE,
                ..endpoint("10.0.0.2", 80)
            },
            "endpoints[1].weight",
        ),
        (
            v1::Endpoint {
                health: "sick".into(),
                ..endpoint("10.0.0.2", 80)
            },
            "endpoints[1].health",
        ),
        (endpoint("10.0.0.1", 8080), "endpoints[1]"),
    ];
    for (bad, field) in cases {
        let m = v1::Endpoints {
            endpoints: vec![endpoint("10.0.0.1", 8080), bad],
            ..ok.clone()
        };
        let err = Endpoints::try_from(&m).expect_err(field);
        assert_eq!(err.field, field, "{err}");
    }
}

const MAX_WEIGHT_PLUS_ONE: u32 = 10_001;

#[test]
fn resource_names_parse_with_default_namespace() {
    assert_eq!(
        ResourceName::parse("orders").expect("valid").to_string(),
        "default/orders"
    );
    assert_eq!(
        ResourceName::parse("shop/orders")
            .expect("valid")
            .to_string(),
        "shop/orders"
    );
    assert!(ResourceName::parse("shop/-orders").is_err());
    assert!(ResourceName::parse(&"a".repeat(64)).is_err());
}
