//! The data path end to end: an application request crosses a client-side proxy
//! and a server-side proxy (the real `weft-proxy` binaries) configured by the real
//! control plane through `weftctl apply`, and follows endpoint changes live.

use std::net::SocketAddr;
use std::time::Duration;

use weft_e2e::mesh::{
    client_proxy, endpoint_addresses, metric_value, named_app as app, weftctl_ok, ControlPlane,
    Proxy,
};
use weft_e2e::{free_port, http_get, promtool_check, wait_for};

const WAIT: Duration = Duration::from_secs(20);

fn mesh(endpoints: &[SocketAddr]) -> String {
    let mut text = String::from(
        "kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports:
  - {port: 80, protocol: http1}
  hostnames: [web.shop]
  loadBalancer: round_robin
---
kind: Endpoints
metadata: {name: web, namespace: shop}
spec:
  endpoints:
",
    );
    for e in endpoints {
        text.push_str(&format!(
            "  - {{address: {}, port: {}}}\n",
            e.ip(),
            e.port()
        ));
    }
    text
}

#[test]
fn requests_cross_two_proxies_configured_by_the_control_plane() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = ControlPlane::start(dir.path(), &dir.path().join("data"), free_port(), &[]);

    // Server side: each app sits behind its own proxy's inbound listener.
    let app_a = app("app-a").to_string();
    let app_b = app("app-b").to_string();
    let server_a = Proxy::start(
        dir.path(),
        "server-a",
        &cp.address(),
        &["--inbound-forward", &app_a],
    );
    let server_b = Proxy::start(
        dir.path(),
        "server-b",
        &cp.address(),
        &["--inbound-forward", &app_b],
    );

    // Client side: an explicit listener for shop/web.
    let (client, listen) = client_proxy(dir.path(), &cp.address(), "client", "shop/web", &[]);

    weftctl_ok(
        &cp.address(),
        &["apply", "-f", "-"],
        Some(&mesh(&[server_a.inbound])),
    );
    client.wait_ready();
    wait_for("the first answer through both proxies", WAIT, || {
        matches!(http_get(listen, "/"), Ok((200, body)) if body == "app-a").then_some(())
    });
    // The harness sends Host: <outbound address>, which names no service: the
    // proxy answers itself.
    let (status, body) = http_get(client.outbound, "/").expect("outbound request");
    assert_eq!(status, 404, "{body}");

    // A second endpoint, applied live, gets its share of new requests.
    weftctl_ok(
        &cp.address(),
        &["apply", "-f", "-"],
        Some(&mesh(&[server_a.inbound, server_b.inbound])),
    );
    wait_for("the client to see both endpoints", WAIT, || {
        (endpoint_addresses(&client.config_dump(), "shop/web").len() == 2).then_some(())
    });
    // The data path applies a snapshot just after the dump shows it.
    wait_for("a request to reach app-b", WAIT, || {
        matches!(http_get(listen, "/"), Ok((200, body)) if body == "app-b").then_some(())
    });
    let mut seen = std::collections::HashMap::new();
    for _ in 0..20 {
        let (status, body) = http_get(listen, "/").expect("request");
        assert_eq!(status, 200);
        *seen.entry(body).or_insert(0) += 1;
    }
    assert_eq!(seen.get("app-a"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("app-b"), Some(&10), "{seen:?}");

    // Removing an endpoint takes it out of rotation at once.
    weftctl_ok(
        &cp.address(),
        &["apply", "-f", "-"],
        Some(&mesh(&[server_b.inbound])),
    );
    wait_for("the client to drop server-a", WAIT, || {
        (endpoint_addresses(&client.config_dump(), "shop/web").len() == 1).then_some(())
    });
    // Round robin over both would alternate; two app-b in a row mean it is gone.
    wait_for("app-a to leave the rotation", WAIT, || {
        let twice = (0..2).all(|_| matches!(http_get(listen, "/"), Ok((200, b)) if b == "app-b"));
        twice.then_some(())
    });
    for _ in 0..5 {
        assert_eq!(
            http_get(listen, "/").expect("request"),
            (200, "app-b".to_owned())
        );
    }

    // Both sides counted the traffic.
    let outbound = client.metrics();
    let sent = metric_value(
        &outbound,
        &[
            "weft_requests_total{",
            "direction=\"outbound\"",
            "service=\"shop/web\"",
        ],
    )
    .expect("outbound request counter");
    assert!(sent >= 26.0, "{outbound}");
    let inbound = server_b.metrics();
    let received = metric_value(&inbound, &["weft_requests_total{", "direction=\"inbound\""])
        .expect("inbound request counter");
    assert!(received >= 15.0, "{inbound}");

    // A live proxy connected to its control plane exposes lint-clean metrics.
    for text in [&outbound, &inbound] {
        promtool_check(text);
    }
}
