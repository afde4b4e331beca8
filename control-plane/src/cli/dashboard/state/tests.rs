use std::collections::BTreeMap;

use weft_proto::v1;
use weft_proto::v1::proxy_status::SyncState;

use super::*;
use crate::cli::top::aggregate::{EdgeStats, ServiceStats};
use crate::cli::top::parse::parse;
use crate::cli::top::Frame;

fn proxy(id: &str, service: &str, admin: &str, state: SyncState) -> v1::ProxyStatus {
    v1::ProxyStatus {
        id: id.to_owned(),
        workload: (!service.is_empty()).then(|| v1::Workload {
            namespace: "shop".to_owned(),
            service: service.to_owned(),
            ..v1::Workload::default()
        }),
        build: "0.1.0".to_owned(),
        state: state as i32,
        admin_address: admin.to_owned(),
        types: vec![v1::TypeSyncStatus {
            type_url: "type.weft.io/weft.v1.Service".to_owned(),
            acked_version: 7,
            latest_version: 8,
            pending_pushes: 0,
            last_nack: match state {
                SyncState::Nacked => "load_balancer: \"maglev\" is not supported".to_owned(),
                _ => String::new(),
            },
        }],
        ..v1::ProxyStatus::default()
    }
}

fn frame() -> Frame {
    let stats = |service: &str, rps: f64| ServiceStats {
        service: service.to_owned(),
        endpoints: 2,
        rps,
        success: Some(1.0),
        p50_ms: Some(1.0),
        p99_ms: Some(2.0),
        tls: Some(1.0),
        client_identities: vec![],
    };
    Frame {
        time: "2026-12-05T00:00:00Z".to_owned(),
        services: vec![stats("shop/orders", 10.0)],
        edges: vec![EdgeStats {
            source: "shopper".to_owned(),
            destination: "shop/orders".to_owned(),
            rps: 10.0,
            success: Some(1.0),
            p50_ms: Some(1.0),
            p99_ms: Some(2.0),
            dst_identities: vec![],
        }],
        unreachable: vec![],
    }
}

fn scraped(
    entries: &[(&str, Result<ProxyMetrics, String>)],
) -> BTreeMap<String, Result<ProxyMetrics, String>> {
    entries
        .iter()
        .map(|(target, result)| ((*target).to_owned(), result.clone()))
        .collect()
}

fn states(view: &View) -> Vec<(&str, &str)> {
    view.proxies
        .iter()
        .map(|p| (p.id.as_str(), p.state))
        .collect()
}

/// A round of `frame()` at t=1000 s with no `--proxy` targets.
fn round<'a>(
    listed: &'a [v1::ProxyStatus],
    control_plane_build: &'a str,
    scraped: BTreeMap<String, Result<ProxyMetrics, String>>,
    fresh: bool,
) -> Round<'a> {
    Round {
        frame: frame(),
        listed,
        control_plane_build,
        scraped,
        fixed: &[],
        fresh,
        now_unix_s: 1000,
    }
}

#[test]
fn a_scrape_gives_the_certificate_and_the_endpoint_states() {
    let samples = parse(
        r#"weft_identity_cert_expiry_timestamp_seconds 1000
weft_endpoints{service="shop/orders",state="healthy"} 2
weft_endpoints{service="shop/orders",state="unhealthy"} 1
weft_outlier_ejected_endpoints{direction="outbound",service="shop/orders"} 1
weft_outlier_ejected_endpoints{direction="inbound",service="shop/cart"} 5
weft_endpoints_unreachable{service="shop/users"} 1
"#,
    )
    .expect("parses");
    let metrics = ProxyMetrics::of(&samples);
    assert_eq!(metrics.cert_expiry_unix_s, Some(1000.0));
    let services: Vec<&str> = metrics
        .endpoints
        .iter()
        .map(|e| e.service.as_str())
        .collect();
    assert_eq!(services, ["shop/orders", "shop/users"]);
    let orders = &metrics.endpoints[0];
    assert_eq!(
        (orders.healthy, orders.unhealthy, orders.ejected),
        (2, 1, 1)
    );
    assert_eq!(metrics.endpoints[1].unreachable, 1);
}

#[test]
fn proxies_turn_down_when_they_leave_the_list_or_stop_answering() {
    let mut dashboard = Dashboard::default();
    let listed = vec![
        proxy("orders-1", "orders", "10.0.0.1:15020", SyncState::Synced),
        proxy("orders-2", "orders", "10.0.0.2:15020", SyncState::Synced),
        proxy("shopper", "", "10.0.0.9:15020", SyncState::Nacked),
    ];
    let metrics = ProxyMetrics {
        cert_expiry_unix_s: Some(4600.0),
        endpoints: vec![],
    };
    let view = dashboard.update(round(
        &listed,
        "0.2.0",
        scraped(&[
            ("10.0.0.1:15020", Ok(metrics.clone())),
            ("10.0.0.2:15020", Ok(metrics.clone())),
            ("10.0.0.9:15020", Ok(metrics.clone())),
        ]),
        true,
    ));
    assert_eq!(
        states(&view),
        [
            ("orders-1", "up"),
            ("orders-2", "up"),
            ("shopper", "nacked")
        ]
    );
    let orders_1 = &view.proxies[0];
    assert_eq!(orders_1.cert_expires_in_s, Some(3600));
    assert_eq!(orders_1.config_version, 7);
    assert!(orders_1.outdated, "0.1.0 is not the control plane's 0.2.0");
    assert_eq!(orders_1.workload, "shop/orders");
    assert!(
        view.proxies[2].nacks[0].starts_with("Service: load_balancer"),
        "{:?}",
        view.proxies[2]
    );
    let orders = view
        .nodes
        .iter()
        .find(|n| n.name == "shop/orders")
        .expect("orders node");
    assert_eq!(
        (orders.kind, orders.proxies, orders.proxies_down),
        ("service", 2, 0)
    );
    let shopper = view
        .nodes
        .iter()
        .find(|n| n.name == "shopper")
        .expect("a client node");
    assert_eq!((shopper.kind, shopper.rps), ("client", 10.0));

    // orders-2 is killed: gone from the list. orders-1's admin stops answering.
    let listed = vec![listed[0].clone(), listed[2].clone()];
    let view = dashboard.update(round(
        &listed,
        "0.1.0",
        scraped(&[
            ("10.0.0.1:15020", Err("connect: refused".to_owned())),
            ("10.0.0.9:15020", Ok(metrics.clone())),
        ]),
        true,
    ));
    assert_eq!(
        states(&view),
        [
            ("orders-1", "down"),
            ("orders-2", "down"),
            ("shopper", "nacked")
        ]
    );
    assert!(
        view.proxies[0].reason.contains("refused"),
        "{:?}",
        view.proxies[0]
    );
    assert!(!view.proxies[0].outdated);
    let orders = view
        .nodes
        .iter()
        .find(|n| n.name == "shop/orders")
        .expect("orders node");
    assert_eq!((orders.proxies, orders.proxies_down), (2, 2));

    // A stale list (the control plane did not answer) says nothing about who left.
    let mut quiet = Dashboard::default();
    quiet.update(round(
        &listed,
        "",
        scraped(&[("10.0.0.9:15020", Ok(metrics.clone()))]),
        true,
    ));
    let view = quiet.update(round(&[], "", BTreeMap::new(), false));
    assert!(
        view.proxies.iter().all(|p| p.state != "down"),
        "{:?}",
        view.proxies
    );
}
