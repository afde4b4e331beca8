//! `weftctl explain` against a real control plane and a real proxy: the same answer
//! from the control plane's resources and from the proxy's `/config_dump`, and a new
//! answer once a route is applied and changed; and the proxy's view of an endpoint
//! its outlier detection ejected.

use std::time::Duration;

use weft_e2e::mesh::{client_proxy, weftctl, weftctl_ok, App, ControlPlane, Proxy};
use weft_e2e::{free_port, http_get, wait_for};

const WAIT: Duration = Duration::from_secs(20);

const MESH: &str = "\
kind: Service
metadata: {name: orders, namespace: shop}
spec:
  ports: [{name: http, port: 80, protocol: http1}]
  virtualIPs: [10.96.0.10]
  hostnames: [orders.shop]
---
kind: Service
metadata: {name: orders-v2, namespace: shop}
spec:
  ports: [{name: http, port: 80, protocol: http1}]
  hostnames: [orders-v2.shop]
---
kind: Endpoints
metadata: {name: orders, namespace: shop}
spec:
  endpoints:
  - {address: 10.0.0.5, port: 8080, locality: {zone: zone-a}}
  - {address: 10.0.0.6, port: 8080, locality: {zone: zone-b}, health: unhealthy}
---
kind: Endpoints
metadata: {name: orders-v2, namespace: shop}
spec:
  endpoints:
  - {address: 10.0.1.5, port: 8080, locality: {zone: zone-a}}
---
kind: AuthorizationPolicy
metadata: {name: orders-callers, namespace: shop}
spec:
  service: orders
  allow: [spiffe://cluster.local/ns/web/*]
";

fn route(v1: u32, v2: u32) -> String {
    format!(
        "\
kind: HTTPRoute
metadata: {{name: orders-split, namespace: shop}}
spec:
  parentRefs: [{{name: orders, port: 80}}]
  rules:
  - name: api
    matches: [{{path: {{type: PathPrefix, value: /api}}}}]
    backendRefs: [{{name: orders, weight: {v1}}}, {{name: orders-v2, weight: {v2}}}]
"
    )
}

fn explain(cp: &str, extra: &[&str]) -> String {
    let mut args = vec!["explain", "web/frontend", "http://orders.shop/api/items"];
    args.extend_from_slice(extra);
    weftctl_ok(cp, &args, None)
}

#[test]
fn explain_names_route_backends_policy_and_endpoints_and_follows_route_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = ControlPlane::start(dir.path(), &dir.path().join("data"), free_port(), &[]);
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(MESH));

    // Without a route, the request goes to the service itself.
    let text = explain(&cp.address(), &[]);
    for expected in [
        "service  shop/orders port 80 (by hostname)",
        "outcome  forwarded",
        "no route attaches to shop/orders port 80",
        "backend  shop/orders:80  weight 1 (100%)",
        "authz    allowed by shop/orders-callers",
        "endpoint 10.0.0.5:8080          healthy   zone zone-a",
        "endpoint 10.0.0.6:8080          unhealthy zone zone-b",
    ] {
        assert!(text.contains(expected), "{expected:?} not in\n{text}");
    }
    // Another namespace's caller is refused by the same policy.
    let denied = weftctl_ok(
        &cp.address(),
        &["explain", "billing/batch", "http://orders.shop/api/items"],
        None,
    );
    assert!(denied.contains("outcome  403 (denied)"), "{denied}");

    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(&route(90, 10)));
    let text = explain(&cp.address(), &[]);
    for expected in [
        "route    HTTPRoute shop/orders-split rule 0 (api), producer route",
        "match    path prefix /api",
        "backend  shop/orders:80  weight 90 (90%)",
        "backend  shop/orders-v2:80  weight 10 (10%)",
        "endpoint 10.0.1.5:8080",
    ] {
        assert!(text.contains(expected), "{expected:?} not in\n{text}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&explain(&cp.address(), &["-o", "json"])).expect("json");
    assert_eq!(json["route"]["name"], "shop/orders-split");
    assert_eq!(json["backends"][1]["authorization"]["decision"], "open");
    let unmatched = weftctl_ok(
        &cp.address(),
        &["explain", "web/frontend", "http://orders.shop/other"],
        None,
    );
    assert!(unmatched.contains("404 (no route matches)"), "{unmatched}");

    // A proxy's own view gives the same answer, and follows a changed route.
    let proxy = Proxy::start(dir.path(), "proxy-explain", &cp.address(), &[]);
    proxy.wait_ready();
    let admin = proxy.admin.to_string();
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(&route(0, 1)));
    let text = wait_for("the proxy's view to carry the new weights", WAIT, || {
        let text = explain(&cp.address(), &["--proxy", &admin]);
        text.contains("backend  shop/orders-v2:80  weight 1 (100%)")
            .then_some(text)
    });
    assert!(
        text.contains("backend  shop/orders:80  weight 0 (0%)"),
        "{text}"
    );
    assert!(text.contains("authz    open (no policy applies)"), "{text}");

    // A saved dump reads the same way; a missing file is an error that says so.
    let dump = dir.path().join("dump.json");
    std::fs::write(&dump, proxy.config_dump().to_string()).expect("write dump");
    let dump = dump.to_string_lossy().into_owned();
    let saved = explain(&cp.address(), &["--config-dump", &dump]);
    assert_eq!(saved, text);
    let missing = weftctl(
        &cp.address(),
        &[
            "explain",
            "web/x",
            "http://orders.shop/",
            "--config-dump",
            "/nonexistent",
        ],
        None,
    );
    assert_eq!(missing.status.code(), Some(1));
}

/// A backend that answers 503 to everything, beside a healthy one: once the client
/// proxy's outlier detection ejects it, `explain --proxy` shows it `ejected` (the
/// control plane, which knows only its health, still says `healthy`).
#[test]
fn explain_through_a_proxy_shows_an_ejected_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = ControlPlane::start(dir.path(), &dir.path().join("data"), free_port(), &[]);
    let good = App::start(dir.path(), "good", &[]);
    let bad = App::start(
        dir.path(),
        "bad",
        &["--fail-ratio", "1", "--fail-status", "503"],
    );
    let (client, listen) = client_proxy(dir.path(), &cp.address(), "client", "shop/orders", &[]);
    let mesh = format!(
        "\
kind: Service
metadata: {{name: orders, namespace: shop}}
spec:
  ports: [{{port: 80, protocol: http1}}]
  hostnames: [orders.shop]
  # Round robin keeps sending to the failing endpoint (P2C over latency would
  # shun it after its first failure, before three in a row).
  loadBalancer: round_robin
  outlierDetection: {{consecutiveFailures: 3, baseEjectionMs: 60000}}
  retries: {{maxRetries: 0}}
---
kind: Endpoints
metadata: {{name: orders, namespace: shop}}
spec:
  endpoints: [{{address: {}, port: {}}}, {{address: {}, port: {}}}]
",
        good.addr.ip(),
        good.addr.port(),
        bad.addr.ip(),
        bad.addr.port()
    );
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(&mesh));
    client.wait_ready();
    let admin = client.admin.to_string();
    let line = |text: &str, address: &str| -> String {
        text.lines()
            .find(|l| l.contains(&format!("endpoint {address}")))
            .unwrap_or_else(|| panic!("no endpoint {address} in\n{text}"))
            .to_owned()
    };
    let (good, bad) = (good.addr.to_string(), bad.addr.to_string());
    let text = wait_for("both endpoints in the proxy's view", WAIT, || {
        let text = explain(&cp.address(), &["--proxy", &admin]);
        text.contains(&bad).then_some(text)
    });
    assert!(line(&text, &bad).contains(" healthy "), "{text}");

    // Requests until the failing endpoint has answered 503 three times in a row.
    let text = wait_for("the failing endpoint to be ejected", WAIT, || {
        let _ = http_get(listen, "/api/items");
        let text = explain(&cp.address(), &["--proxy", &admin]);
        line(&text, &bad).contains(" ejected ").then_some(text)
    });
    assert!(line(&text, &good).contains(" healthy "), "{text}");
    let dump = client.config_dump();
    let states = dump["resources"]["endpoints"][0]["endpoints"].to_string();
    assert!(states.contains("\"state\":\"ejected\""), "{states}");
    // The control plane knows health, not this proxy's ejections.
    let central = explain(&cp.address(), &[]);
    assert!(line(&central, &bad).contains(" healthy "), "{central}");
}
