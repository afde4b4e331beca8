//! The foundation end to end: the real control plane, proxies and weftctl.

use std::time::{Duration, Instant};

use weft_e2e::mesh::{
    endpoint_addresses, metric_value, resource, weftctl, weftctl_ok, ControlPlane, Proxy,
};
use weft_e2e::{free_port, wait_for};

const WAIT: Duration = Duration::from_secs(20);

const MESH: &str = "\
kind: Service
metadata: {name: orders, namespace: shop}
spec:
  ports:
  - {name: http, port: 80, protocol: http1}
  virtualIPs: [10.96.0.10]
  hostnames: [orders.shop]
---
kind: Service
metadata: {name: users, namespace: shop}
spec:
  ports:
  - {port: 9090, protocol: grpc}
---
kind: Endpoints
metadata: {name: orders, namespace: shop}
spec:
  endpoints:
  - {address: 10.1.0.1, port: 8080, portName: http}
  - {address: 10.1.0.2, port: 8080, portName: http, locality: {region: eu, zone: eu-1b}}
---
kind: Endpoints
metadata: {name: users, namespace: shop}
spec:
  endpoints:
  - {address: 10.2.0.1, port: 9090}
";

fn orders_endpoints(second: &str) -> String {
    format!(
        "kind: Endpoints
metadata: {{name: orders, namespace: shop}}
spec:
  endpoints:
  - {{address: 10.1.0.1, port: 8080, portName: http}}
  - {{address: {second}, port: 8080, portName: http}}
"
    )
}

fn status_line(control_plane: &str, node_id: &str) -> String {
    let status = weftctl_ok(control_plane, &["status"], None);
    status
        .lines()
        .skip_while(|line| !line.contains(node_id))
        .take(2)
        .collect::<Vec<_>>()
        .join("\n")
}

fn updates(proxy: &Proxy, kind: &str) -> f64 {
    metric_value(
        &proxy.metrics(),
        &[
            "weft_config_updates_total",
            &format!("type=\"{kind}\""),
            "result=\"ack\"",
        ],
    )
    .unwrap_or(0.0)
}

#[test]
fn config_reaches_every_proxy_and_only_what_changed_is_pushed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = ControlPlane::start(dir.path(), &dir.path().join("data"), free_port(), &[]);
    let applied = weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(MESH));
    assert!(applied.contains("created"), "{applied}");

    let a = Proxy::start(dir.path(), "proxy-a", &cp.address(), &[]);
    let b = Proxy::start(dir.path(), "proxy-b", &cp.address(), &[]);
    for proxy in [&a, &b] {
        proxy.wait_ready();
        let dump = proxy.config_dump();
        assert_eq!(
            endpoint_addresses(&dump, "shop/orders"),
            ["10.1.0.1:8080", "10.1.0.2:8080"]
        );
        let orders = resource(&dump, "services", "shop/orders").expect("orders service");
        assert_eq!(orders["hostnames"][0], "orders.shop");
        assert_eq!(orders["ports"][0]["protocol"], "http1");
        assert!(resource(&dump, "services", "shop/users").is_some());
    }
    wait_for("both proxies SYNCED", WAIT, || {
        let synced = [&a, &b]
            .iter()
            .all(|p| status_line(&cp.address(), &p.node_id).contains("SYNCED"));
        synced.then_some(())
    });

    let before = |p: &Proxy| {
        (
            p.version_of("services", "shop/orders"),
            p.version_of("services", "shop/users"),
            p.version_of("endpoints", "shop/users"),
            p.version_of("endpoints", "shop/orders"),
        )
    };
    let (svc_orders, svc_users, ep_users, ep_orders) = before(&a);
    let service_pushes = updates(&a, "Service");
    let endpoint_pushes = updates(&a, "Endpoints");

    // Change one endpoint: only that resource moves, on both proxies.
    weftctl_ok(
        &cp.address(),
        &["apply", "-f", "-"],
        Some(&orders_endpoints("10.1.0.3")),
    );
    for proxy in [&a, &b] {
        wait_for("the changed endpoint", WAIT, || {
            let dump = proxy.config_dump();
            (endpoint_addresses(&dump, "shop/orders") == ["10.1.0.1:8080", "10.1.0.3:8080"])
                .then_some(())
        });
        let (s_o, s_u, e_u, e_o) = before(proxy);
        assert_eq!((s_o, s_u, e_u), (svc_orders, svc_users, ep_users));
        assert!(
            e_o > ep_orders,
            "endpoints version must grow: {e_o:?} vs {ep_orders:?}"
        );
    }
    wait_for("one more endpoints push", WAIT, || {
        (updates(&a, "Endpoints") == endpoint_pushes + 1.0).then_some(())
    });
    assert_eq!(
        updates(&a, "Service"),
        service_pushes,
        "no service was pushed"
    );

    // Applying the same document again changes nothing and says so.
    let again = weftctl_ok(
        &cp.address(),
        &["apply", "-f", "-"],
        Some(&orders_endpoints("10.1.0.3")),
    );
    assert!(again.contains("unchanged"), "{again}");
    assert_eq!(updates(&a, "Endpoints"), endpoint_pushes + 1.0);
}

#[test]
fn an_invalid_file_is_rejected_naming_the_field_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = ControlPlane::start(dir.path(), &dir.path().join("data"), free_port(), &[]);
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(MESH));
    let before = weftctl_ok(&cp.address(), &["get", "service", "-o", "yaml"], None);

    let cases = [
        (
            "port: 9090, protocol: grpc",
            "port: 0, protocol: grpc",
            "ports[0].port",
        ),
        (
            "port: 9090, protocol: grpc",
            "port: 9090, protocol: udp",
            "protocol",
        ),
        (
            "name: users, namespace: shop}\nspec:\n  endpoints",
            "name: payments, namespace: shop}\nspec:\n  endpoints",
            "does not exist",
        ),
        ("address: 10.2.0.1", "address: 10.2.0.999", "address"),
    ];
    for (from, to, field) in cases {
        // Each bad file also carries a valid change, which must not be applied either.
        let bad = MESH.replace(from, to).replace("10.1.0.2", "10.1.0.9");
        assert_ne!(
            bad,
            MESH.replace("10.1.0.2", "10.1.0.9"),
            "case {field} must alter the file"
        );
        let output = weftctl(&cp.address(), &["apply", "-f", "-"], Some(&bad));
        assert!(!output.status.success(), "{field}: must be rejected");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(field), "{field}: message was {stderr}");
    }
    let after = weftctl_ok(&cp.address(), &["get", "service", "-o", "yaml"], None);
    assert_eq!(before, after);
    let endpoints = weftctl_ok(
        &cp.address(),
        &["get", "endpoints", "shop/orders", "-o", "yaml"],
        None,
    );
    assert!(
        endpoints.contains("10.1.0.2") && !endpoints.contains("10.1.0.9"),
        "{endpoints}"
    );
}

#[test]
fn a_resource_the_proxy_cannot_accept_is_nacked_and_status_shows_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = ControlPlane::start(dir.path(), &dir.path().join("data"), free_port(), &[]);
    let service = |policy: &str| {
        format!(
            "kind: Service\nmetadata: {{name: pay, namespace: shop}}\nspec:\n  ports: [{{port: 80, protocol: http1}}]\n  loadBalancer: {policy}\n"
        )
    };
    weftctl_ok(
        &cp.address(),
        &["apply", "-f", "-"],
        Some(&service("round_robin")),
    );
    let proxy = Proxy::start(dir.path(), "proxy-nack", &cp.address(), &[]);
    proxy.wait_ready();
    let good_version = proxy
        .version_of("services", "shop/pay")
        .expect("service held");

    // The control plane accepts any well-formed policy name; this proxy build does not
    // implement least_request, so it rejects the resource and keeps the last good one.
    weftctl_ok(
        &cp.address(),
        &["apply", "-f", "-"],
        Some(&service("least_request")),
    );
    let line = wait_for("NACKED in weftctl status", WAIT, || {
        let line = status_line(&cp.address(), "proxy-nack");
        line.contains("NACKED").then_some(line)
    });
    assert!(line.contains("least_request"), "{line}");
    let dump = proxy.config_dump();
    let held = resource(&dump, "services", "shop/pay").expect("still held");
    assert_eq!(held["version"].as_u64(), Some(good_version));
    assert_eq!(held["load_balancer"], "round_robin");
    assert!(
        dump["control_plane"]["rejected"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("least_request")),
        "{dump}"
    );
    assert!(proxy.is_ready(), "a NACK does not make a proxy unready");
    // The level the NACK alert (deploy/observability) holds on to.
    let rejected = |metrics: &str| {
        weft_e2e::metric_sum(
            metrics,
            "weft_config_rejected_resources",
            &["type=\"Service\""],
        )
    };
    assert_eq!(rejected(&proxy.metrics()), 1.0, "{}", proxy.metrics());

    // A fixed resource is accepted and the proxy is SYNCED again.
    weftctl_ok(
        &cp.address(),
        &["apply", "-f", "-"],
        Some(&service("random")),
    );
    wait_for("SYNCED after the fix", WAIT, || {
        status_line(&cp.address(), "proxy-nack")
            .contains("SYNCED")
            .then_some(())
    });
    let dump = proxy.config_dump();
    assert_eq!(
        resource(&dump, "services", "shop/pay").expect("held")["load_balancer"],
        "random"
    );
    assert_eq!(rejected(&proxy.metrics()), 0.0, "{}", proxy.metrics());
}

#[test]
fn a_restarted_control_plane_keeps_resources_and_proxies_converge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut cp = ControlPlane::start(dir.path(), &data, free_port(), &[]);
    let port = cp.port;
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(MESH));
    let listed = weftctl_ok(&cp.address(), &["get", "svc", "-o", "yaml"], None);
    let proxy = Proxy::start(
        dir.path(),
        "proxy-restart",
        &cp.address(),
        &[
            "--namespace",
            "shop",
            "--service",
            "users",
            "--workload-address",
            "127.0.0.1",
            "--workload-port",
            "19090",
        ],
    );
    proxy.wait_ready();
    wait_for("the proxy's own endpoint", WAIT, || {
        endpoint_addresses(&proxy.config_dump(), "shop/users")
            .contains(&"127.0.0.1:19090".to_owned())
            .then_some(())
    });
    let ep_version = proxy.version_of("endpoints", "shop/users");

    cp.proc.kill();
    wait_for("the proxy to notice", WAIT, || {
        (proxy.config_dump()["control_plane"]["state"] == "disconnected").then_some(())
    });
    assert!(
        proxy.is_ready(),
        "a proxy without its control plane keeps serving"
    );

    let cp = ControlPlane::start(dir.path(), &data, port, &[]);
    assert_eq!(cp.port, port, "the control plane came back on its port");
    assert_eq!(
        weftctl_ok(&cp.address(), &["get", "svc", "-o", "yaml"], None),
        listed,
        "resources and versions survive a restart"
    );
    wait_for("the proxy to reconnect", WAIT, || {
        (proxy.config_dump()["control_plane"]["state"] == "connected").then_some(())
    });
    // Reconnected within the grace period: its endpoint never went away.
    assert_eq!(proxy.version_of("endpoints", "shop/users"), ep_version);
    weftctl_ok(
        &cp.address(),
        &["apply", "-f", "-"],
        Some(&orders_endpoints("10.1.0.7")),
    );
    wait_for("a change after the restart", WAIT, || {
        endpoint_addresses(&proxy.config_dump(), "shop/orders")
            .contains(&"10.1.0.7:8080".to_owned())
            .then_some(())
    });
    wait_for("SYNCED after the restart", WAIT, || {
        status_line(&cp.address(), "proxy-restart")
            .contains("SYNCED")
            .then_some(())
    });
}

#[test]
fn a_killed_proxys_endpoint_leaves_the_others_views_after_the_grace_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = ControlPlane::start(
        dir.path(),
        &dir.path().join("data"),
        free_port(),
        &["--registration-grace-ms", "1000"],
    );
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(MESH));
    let mut server = Proxy::start(
        dir.path(),
        "proxy-server",
        &cp.address(),
        &[
            "--namespace",
            "shop",
            "--service",
            "orders",
            "--workload-address",
            "127.0.0.5",
            "--workload-port",
            "http=18080",
        ],
    );
    // By name: the proxy resolves the control plane with its own DNS resolver.
    let client = Proxy::start(
        dir.path(),
        "proxy-client",
        &format!("localhost:{}", cp.port),
        &[],
    );
    client.wait_ready();
    wait_for("the registered endpoint", WAIT, || {
        (endpoint_addresses(&client.config_dump(), "shop/orders")
            == ["10.1.0.1:8080", "10.1.0.2:8080", "127.0.0.5:18080"])
        .then_some(())
    });

    server.proc.kill();
    let killed = Instant::now();
    wait_for("the endpoint to leave", WAIT, || {
        (endpoint_addresses(&client.config_dump(), "shop/orders")
            == ["10.1.0.1:8080", "10.1.0.2:8080"])
        .then_some(())
    });
    assert!(
        killed.elapsed() >= Duration::from_millis(900),
        "removed before the grace period ended"
    );
}

#[test]
fn a_proxy_started_without_its_control_plane_stays_unready_and_keeps_retrying() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut proxy = Proxy::start(dir.path(), "proxy-early", &format!("127.0.0.1:{port}"), &[]);
    wait_for("three reconnect attempts", WAIT, || {
        let dump = proxy.config_dump();
        (dump["control_plane"]["reconnects"].as_u64() >= Some(3)).then_some(())
    });
    assert!(!proxy.is_ready());
    assert!(proxy.proc.is_running());
    let dump = proxy.config_dump();
    assert!(
        dump["control_plane"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&port.to_string())),
        "the error names the address: {dump}"
    );

    let cp = ControlPlane::start(dir.path(), &dir.path().join("data"), port, &[]);
    assert_eq!(
        cp.port, port,
        "the control plane came up on the port the proxy knows"
    );
    proxy.wait_ready();
}

#[test]
fn a_proxy_reports_every_invalid_flag_at_once_and_exits_64() {
    let output = weft_e2e::run(
        std::process::Command::new(weft_e2e::bin("weft-proxy"))
            .args(["--admin", "nowhere", "--control-plane", "no-port"])
            .args(["--upstream", "orders", "--workload-port", "80"]),
    );
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for flag in [
        "--admin",
        "--control-plane",
        "--upstream",
        "--workload-port needs --service",
    ] {
        assert!(stderr.contains(flag), "{flag} missing from: {stderr}");
    }
}

#[test]
fn a_taken_port_stops_the_binaries_with_its_address_and_the_harness_moves_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let output = weft_e2e::run(
        std::process::Command::new(weft_e2e::bin("weft-control-plane"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path().join("refused")),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");

    let cp = ControlPlane::start(dir.path(), &dir.path().join("data"), port, &[]);
    assert_ne!(cp.port, port);
    // The proxy binds its data path before its admin port answers: a taken
    // inbound port stops it before `/live` could say it is alive, with one worker
    // (a current-thread runtime) as with several.
    for workers in ["1", "2"] {
        let output = weft_e2e::run(
            std::process::Command::new(weft_e2e::bin("weft-proxy"))
                .args(["--control-plane", &cp.address(), "--workers", workers])
                .args(["--inbound", &format!("127.0.0.1:{port}")])
                .args(["--admin", &weft_e2e::loopback(free_port()).to_string()])
                .args(["--outbound", &weft_e2e::loopback(free_port()).to_string()]),
        );
        assert!(!output.status.success(), "--workers {workers}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("127.0.0.1:{port} (inbound)")),
            "--workers {workers}: {stderr}"
        );
    }
}
