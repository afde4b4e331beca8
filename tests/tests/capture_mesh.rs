//! The mesh with transparent capture, all real: two pods (network namespaces on one
//! bridge), each with an app, a `weft-proxy` running as its own UID and the rules of
//! `weft-proxy init`; the `weft-control-plane` in a third namespace on the same bridge.
//! The client app dials a Service's virtual IP as if the network were plain; the
//! request must reach the server app through both proxies.
//!
//! ```text
//!   client pod 10.203.0.1          control plane 10.203.0.3        server pod 10.203.0.2
//!   app (uid 1000)                                                 app :8080 tcp, :8081 http
//!    │ connect 10.203.100.10:80 (tcp) or :81 (http)                 ▲ 127.0.0.1:8080 / :8081
//!    ▼ OUTPUT REDIRECT                                              │
//!   proxy :15001 (uid 1337) ── 10.203.0.2:8080/8081 ── PREROUTING REDIRECT ─▶ proxy :15006
//! ```
//!
//! Needs root; build the binaries first: `cargo build --workspace --bins`.

mod common;

use std::time::Duration;

use weft_e2e::netns::{Lan, Netns};
use weft_e2e::{bin, wait_for, Proc};

use common::*;

const CONTROL_PLANE: &str = "10.203.0.3:15010";
/// The Service's virtual IP: no interface has it; only the client's rules make it work.
const VIP: &str = "10.203.100.10";
const ADMIN: &str = "127.0.0.1:15020";

/// A proxy, as the sidecar container runs it: a dedicated UID, defaults otherwise.
fn proxy(pod: &Netns, name: &str, extra: &[&str], logs: &std::path::Path) -> Proc {
    let mut command = pod.command("setpriv");
    command
        .args(["--reuid", PROXY_UID, "--regid", PROXY_UID, "--clear-groups"])
        .arg(bin("weft-proxy"))
        .args(["--control-plane", CONTROL_PLANE, "--node-id", name])
        .args(extra)
        .env("WEFT_LOG", "info,weft_proxy=debug");
    Proc::spawn(name, &mut command, logs)
}

/// The value of the first metric line starting with `name{` whose labels include all
/// of `labels`.
fn metric(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_service_vip_call_crosses_both_proxies_without_the_app_knowing() {
    let logs = tempfile::tempdir().expect("temp dir");
    let lan = Lan::new();
    let control_ns = Netns::new("cp");
    let client = Netns::new("client");
    let server = Netns::new("server");
    lan.attach(&control_ns, "10.203.0.3/24");
    lan.attach(&client, "10.203.0.1/24");
    lan.attach(&server, "10.203.0.2/24");
    // A pod's default route: without one, connecting to the VIP fails before the
    // OUTPUT chain could redirect it.
    client.default_route("eth0");
    for pod in [&client, &server] {
        init(pod, &["--proxy-uid", PROXY_UID]);
    }

    let mut control = control_ns.command(bin("weft-control-plane"));
    control
        .args(["--listen", CONTROL_PLANE, "--data-dir"])
        .arg(logs.path().join("control-plane-data"));
    let _control = Proc::spawn("control-plane", &mut control, logs.path());
    let mesh_yaml = logs.path().join("mesh.yaml");
    std::fs::write(
        &mesh_yaml,
        format!(
            "kind: Service\nmetadata: {{name: echo, namespace: default}}\nspec:\n  \
             ports:\n  - {{name: tcp, port: 80, protocol: tcp}}\n  \
             - {{name: http, port: 81, protocol: http1}}\n  virtualIPs: [{VIP}]\n"
        ),
    )
    .expect("write mesh.yaml");
    let mesh_yaml = mesh_yaml.to_string_lossy().into_owned();
    wait_for(
        "the control plane to accept the Service",
        Duration::from_secs(15),
        || {
            let output = control_ns.run(
                bin("weftctl"),
                &["--control-plane", CONTROL_PLANE, "apply", "-f", &mesh_yaml],
            );
            output.status.success().then_some(())
        },
    );

    let _server_app = serve(
        &server,
        "server-app",
        &["server-app=0.0.0.0:8080", "http:server-web=0.0.0.0:8081"],
        logs.path(),
    );
    let _server_proxy = proxy(
        &server,
        "server-proxy",
        &[
            "--service",
            "echo",
            "--workload-address",
            "10.203.0.2",
            "--workload-port",
            "tcp=8080",
            "--workload-port",
            "http=8081",
        ],
        logs.path(),
    );
    let _client_proxy = proxy(&client, "client-proxy", &[], logs.path());

    // The client proxy knows the Service and the server's endpoint (self-registered).
    wait_for(
        "the client proxy to learn the echo endpoint",
        Duration::from_secs(15),
        || {
            let metrics = http_get(&client, ADMIN, "/metrics")?;
            let endpoints = metric(&metrics, "weft_endpoints", &["service=\"default/echo\""]);
            (endpoints >= Some(1.0)).then_some(())
        },
    );

    // The app dials the virtual IP like any address, as an ordinary UID.
    let answer = dial(&client, APP, &format!("{VIP}:80"));
    assert_eq!(answer.label, "server-app", "{answer:?}");
    // The server app was reached over loopback, from its own proxy, not from the
    // client pod's address: the inbound hop happened.
    assert!(answer.peer.starts_with("127.0.0.1:"), "{answer:?}");
    assert_eq!(answer.local, "127.0.0.1:8080", "{answer:?}");

    // The same for an HTTP request to the Service's other port.
    let answer = dial_http(&client, APP, &format!("{VIP}:81"));
    assert_eq!(answer.label, "server-web", "{answer:?}");
    assert!(answer.peer.starts_with("127.0.0.1:"), "{answer:?}");
    assert_eq!(answer.local, "127.0.0.1:8081", "{answer:?}");

    // Both proxies counted the traffic under the Service.
    let client_metrics = http_get(&client, ADMIN, "/metrics").expect("client proxy metrics");
    let outbound_tcp = metric(
        &client_metrics,
        "weft_tcp_connections_opened_total",
        &["direction=\"outbound\"", "service=\"default/echo\""],
    );
    assert_eq!(outbound_tcp, Some(2.0), "client proxy:\n{client_metrics}");
    let outbound_http = metric(
        &client_metrics,
        "weft_requests_total",
        &["direction=\"outbound\"", "service=\"default/echo\""],
    );
    assert_eq!(outbound_http, Some(1.0), "client proxy:\n{client_metrics}");
    let server_metrics = http_get(&server, ADMIN, "/metrics").expect("server proxy metrics");
    let inbound_tcp = metric(
        &server_metrics,
        "weft_tcp_connections_opened_total",
        &["direction=\"inbound\""],
    );
    assert!(
        inbound_tcp >= Some(2.0),
        "server proxy: fewer inbound connections than hops:\n{server_metrics}"
    );
    let inbound_http = metric(
        &server_metrics,
        "weft_requests_total",
        &["direction=\"inbound\""],
    );
    assert_eq!(inbound_http, Some(1.0), "server proxy:\n{server_metrics}");
}
