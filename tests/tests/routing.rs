//! Gateway API routes on the request path, end to end: the real control plane takes
//! an HTTPRoute through `weftctl apply`, and the real client-side proxy sends each
//! request to the backend its rules choose: by path and header, split by weight,
//! 404 when no rule matches and 500 when the matched rule has no backend; and a
//! GRPCRoute sends calls by method, seen by the Python grpcio client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use weft_e2e::mesh::{
    client_proxy, metric_value, named_app as app, shop_service, weftctl, weftctl_ok, ControlPlane,
};
use weft_e2e::{free_port, grpc, http_get, run, wait_for, which};

const WAIT: Duration = Duration::from_secs(20);

/// A service `name` in `shop` on port 80, its one endpoint the app at `addr`.
fn service(name: &str, addr: SocketAddr) -> String {
    shop_service(name, addr, "http1", "")
}

/// The route of `web`: by header, by path, a rule without backend, and a split
/// of `/split` between v1 and v2 with the given weights.
fn route(v1: u32, v2: u32) -> String {
    format!(
        "kind: HTTPRoute
metadata: {{name: web-routes, namespace: shop}}
spec:
  parentRefs: [{{name: web, port: 80}}]
  rules:
  - matches: [{{headers: [{{name: x-canary, value: 'yes'}}]}}]
    backendRefs: [{{name: v2, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /v1}}}}]
    backendRefs: [{{name: v1, port: 80}}]
  - matches: [{{path: {{type: Exact, value: /web}}}}]
  - matches: [{{path: {{type: Exact, value: /nowhere}}}}]
    backendRefs: [{{name: v1, port: 80, weight: 0}}]
  - matches: [{{path: {{type: PathPrefix, value: /split}}}}]
    backendRefs: [{{name: v1, port: 80, weight: {v1}}}, {{name: v2, port: 80, weight: {v2}}}]
"
    )
}

/// `curl` through the proxy: (status, body).
fn curl(listen: SocketAddr, path: &str, headers: &[&str]) -> (u16, String) {
    let mut command = Command::new(which("curl"));
    command.args(["-sS", "-w", "\n%{http_code}"]);
    for header in headers {
        command.args(["-H", header]);
    }
    command.arg(format!("http://{listen}{path}"));
    let output = run(&mut command);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("status line");
    (status.parse().expect("status"), body.to_owned())
}

/// The share (percent) of `n` requests to `/split` that v2 answered.
fn v2_share(listen: SocketAddr, n: usize) -> f64 {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..n {
        let (status, body) = http_get(listen, "/split").expect("request");
        assert_eq!(status, 200, "{body}");
        *seen.entry(body).or_default() += 1;
    }
    let v2 = seen.get("v2").copied().unwrap_or(0);
    assert_eq!(seen.values().sum::<usize>(), n, "{seen:?}");
    100.0 * v2 as f64 / n as f64
}

#[test]
fn routes_choose_backends_by_match_and_weight() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = ControlPlane::start(dir.path(), &dir.path().join("data"), free_port(), &[]);
    let (client, listen) = client_proxy(dir.path(), &cp.address(), "client", "shop/web", &[]);
    let mesh = [
        service("web", app("web")),
        service("v1", app("v1")),
        service("v2", app("v2")),
    ]
    .concat();
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(&mesh));
    client.wait_ready();
    wait_for("web to answer without routes", WAIT, || {
        matches!(http_get(listen, "/split"), Ok((200, b)) if b == "web").then_some(())
    });

    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(&route(90, 10)));
    wait_for("the route to apply", WAIT, || {
        matches!(http_get(listen, "/v1"), Ok((200, b)) if b == "v1").then_some(())
    });

    // Matches, with curl: path prefix, header, a rule without backendRefs (its
    // parent), no match (404), a rule whose backends all weigh 0 (500).
    assert_eq!(curl(listen, "/v1/items", &[]), (200, "v1".into()));
    assert_eq!(
        curl(listen, "/other", &["x-canary: yes"]),
        (200, "v2".into())
    );
    // The longer path prefix outranks the header rule's default prefix `/`.
    assert_eq!(curl(listen, "/v1", &["x-canary: yes"]), (200, "v1".into()));
    assert_eq!(curl(listen, "/web", &[]), (200, "web".into()));
    assert_eq!(curl(listen, "/other", &[]).0, 404);
    assert_eq!(curl(listen, "/nowhere", &[]).0, 500);

    // 90/10 over 10,000 requests lands within 2 points.
    let share = v2_share(listen, 10_000);
    eprintln!("configured v2 10%, measured {share:.2}%");
    assert!((share - 10.0).abs() <= 2.0, "v2 share {share}");

    // Requests a route sent carry its name in the `route` label, by backend.
    let metrics = client.metrics();
    let routed = |service: &str| {
        let service = format!("service=\"shop/{service}\"");
        metric_value(
            &metrics,
            &[
                "weft_requests_total{",
                &service,
                "route=\"shop/web-routes\"",
            ],
        )
        .unwrap_or(0.0)
    };
    assert!(
        routed("v1") >= 8_000.0 && routed("v2") >= 800.0,
        "{metrics}"
    );
    // Before the route applied, requests to web counted with an empty label.
    assert!(
        metric_value(
            &metrics,
            &["weft_requests_total{", "service=\"shop/web\"", "route=\"\""]
        )
        .is_some(),
        "{metrics}"
    );

    // Shifting the weights: the first requests after the push go by the new ones.
    for (v1, v2) in [(50, 50), (0, 100)] {
        weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(&route(v1, v2)));
        // The dump shows the route as the proxy holds it; the data path takes the
        // snapshot just after.
        let weight = format!("\"weight\":{v2}");
        wait_for("the proxy to hold the new weights", WAIT, || {
            let dump = client.config_dump();
            dump["resources"]["http_routes"]
                .to_string()
                .contains(&weight)
                .then_some(())
        });
        let share = v2_share(listen, 2_000);
        eprintln!("configured v2 {v2}%, measured {share:.2}%");
        assert!(
            (share - f64::from(v2)).abs() <= 4.0,
            "v2 share {share} for {v2}"
        );
    }

    // A backend service removed from the mesh: the split answers 500, not a hang.
    let status = weftctl(&cp.address(), &["delete", "svc", "shop/v2"], None).status;
    if status.success() {
        wait_for("the gone backend to answer 500", WAIT, || {
            (http_get(listen, "/split").map(|r| r.0).ok() == Some(500)).then_some(())
        });
    }
}

#[test]
fn grpc_routes_choose_backends_by_method() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = grpc::script(dir.path());
    let (one, two) = (grpc::app(&script, "one"), grpc::app(&script, "two"));
    let cp = ControlPlane::start(dir.path(), &dir.path().join("data"), free_port(), &[]);
    let (client, listen) = client_proxy(dir.path(), &cp.address(), "client", "shop/echo", &[]);
    let mut mesh = String::new();
    for (name, addr) in [("echo", one.addr), ("echo-two", two.addr)] {
        mesh.push_str(&service(name, addr).replace("protocol: http1", "protocol: grpc"));
    }
    mesh.push_str(
        "kind: GRPCRoute
metadata: {name: by-method, namespace: shop}
spec:
  parentRefs: [{name: echo, port: 80}]
  rules:
  - matches: [{method: {service: weft.test.Echo, method: Stream}}]
    backendRefs: [{name: echo-two, port: 80}]
  - matches: [{method: {service: weft.test.Echo}}]
",
    );
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(&mesh));
    client.wait_ready();
    let target = listen.to_string();
    let call = |path: &str| grpc::client(&script, &["served", &target, path]);
    wait_for("the route to send Stream to echo-two", WAIT, || {
        (call("/weft.test.Echo/Stream")["served_by"] == "two").then_some(())
    });
    for _ in 0..5 {
        let unary = call("/weft.test.Echo/Unary");
        assert_eq!(unary["served_by"], "one", "{unary}");
        let stream = call("/weft.test.Echo/Stream");
        assert_eq!(stream["served_by"], "two", "{stream}");
    }
    // No rule matches another service's calls: the proxy answers UNIMPLEMENTED.
    let other = call("/weft.test.Other/Unary");
    assert_eq!(other["code"], "UNIMPLEMENTED", "{other}");
}
