//! A sidecar that knows only its pod IP (`--workload-address`, no `--service`: what
//! the Kubernetes injector can give it) learns its services from the endpoints at
//! that IP and applies them on its inbound side, port by port. All real: network
//! namespaces on one bridge, `weft-proxy init`'s rules in the server pod, the control
//! plane on the embedded store, identities from join tokens, and the endpoints
//! declared with `weftctl apply` as the Kubernetes mode makes them from slices.
//!
//! ```text
//!   clients 10.203.8.1                    control plane 10.203.8.3
//!   frontend proxy (sa frontend) ┐
//!   ops proxy (sa ops)           ├─ mTLS ─▶ 10.203.8.2:8080 shop/web   (STRICT, web-callers: frontend)
//!   curl-like, no proxy          ┘          10.203.8.2:9090 shop/admin (STRICT, admin-callers: ops)
//!                                           10.203.8.2:7070 no service
//!                       server pod 10.203.8.2: PREROUTING ─▶ proxy :15006 ─▶ app 127.0.0.1:<port>
//! ```
//!
//! Needs root; build the binaries first: `cargo build --workspace --bins`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use weft_e2e::mesh::metric_value;
use weft_e2e::netns::{self, Lan, Netns};
use weft_e2e::{bin, metric_sum, promtool_check, wait_for, Proc};

use common::*;

const CONTROL_PLANE: &str = "10.203.8.3:15010";
const POD_IP: &str = "10.203.8.2";
const ADMIN: &str = "127.0.0.1:15020";
const WAIT: Duration = Duration::from_secs(20);

fn mesh() -> String {
    let endpoint = |port| {
        format!(
            "{{address: {POD_IP}, port: {port}, portName: http, \
             identity: spiffe://cluster.local/ns/shop/sa/server}}"
        )
    };
    format!(
        "
kind: Service
metadata: {{name: web, namespace: shop}}
spec: {{ports: [{{name: http, port: 80, protocol: http1}}], mtls: STRICT}}
---
kind: Service
metadata: {{name: admin, namespace: shop}}
spec: {{ports: [{{name: http, port: 81, protocol: http1}}], mtls: STRICT}}
---
kind: Endpoints
metadata: {{name: web, namespace: shop}}
spec: {{endpoints: [{web}]}}
---
kind: Endpoints
metadata: {{name: admin, namespace: shop}}
spec: {{endpoints: [{admin}]}}
---
kind: AuthorizationPolicy
metadata: {{name: web-callers, namespace: shop}}
spec: {{service: web, allow: [spiffe://cluster.local/ns/shop/sa/frontend]}}
---
kind: AuthorizationPolicy
metadata: {{name: admin-callers, namespace: shop}}
spec: {{service: admin, allow: [spiffe://cluster.local/ns/shop/sa/ops]}}
",
        web = endpoint(8080),
        admin = endpoint(9090),
    )
}

/// The control plane's namespace, where weftctl runs.
struct Control {
    netns: Netns,
    _proc: Proc,
}

impl Control {
    fn weftctl(&self, args: &[&str]) -> String {
        let mut full = vec!["--control-plane", CONTROL_PLANE];
        full.extend_from_slice(args);
        let output = self.netns.run(bin("weftctl"), &full);
        assert!(
            output.status.success(),
            "weftctl {args:?}: {}",
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    fn apply(&self, yaml: &str, logs: &Path) {
        let file = logs.join("mesh.yaml");
        std::fs::write(&file, yaml).expect("write the mesh");
        self.weftctl(&["apply", "-f", &file.to_string_lossy()]);
    }

    fn token(&self, account: &str) -> String {
        let created = self.weftctl(&[
            "token",
            "create",
            "--namespace",
            "shop",
            "--service-account",
            account,
        ]);
        created.trim().to_owned()
    }
}

/// A proxy with the identity `shop/<account>`, as the sidecar container runs it:
/// its own UID, so the pod's rules leave its connections alone; `extra` adds flags.
fn proxy(pod: &Netns, cp: &Control, account: &str, extra: &[&str], logs: &Path) -> Proc {
    let token = cp.token(account);
    let mut command = pod.command("setpriv");
    command
        .args(["--reuid", PROXY_UID, "--regid", PROXY_UID, "--clear-groups"])
        .arg(bin("weft-proxy"))
        .args(["--control-plane", CONTROL_PLANE, "--node-id", account])
        .args(["--namespace", "shop", "--service-account", account])
        .args(["--identity-token", &token])
        .args(extra)
        .env("WEFT_LOG", "info,weft_proxy=debug");
    Proc::spawn(account, &mut command, logs)
}

/// `GET /` from inside `pod`: (status, body), status 0 when the connection closed
/// without an answer.
fn get(pod: &Netns, addr: &str) -> std::io::Result<(u16, String)> {
    let addr: SocketAddr = addr.parse().expect("an address");
    netns::within(pod.name(), || weft_e2e::http_get(addr, "/")).expect("enter the namespace")
}

/// Which app answered `GET /` (the probe's label), with status 200.
fn answered(pod: &Netns, addr: &str) -> Option<String> {
    match get(pod, addr) {
        Ok((200, body)) => body.split(' ').next().map(str::to_owned),
        _ => None,
    }
}

/// The status of `GET /`, which must get an answer.
fn status(pod: &Netns, addr: &str) -> u16 {
    get(pod, addr)
        .unwrap_or_else(|e| panic!("GET http://{addr}/: {e}"))
        .0
}

/// Whether the connection closed (or was reset) before any answer: what STRICT does
/// to plaintext.
fn closed(pod: &Netns, addr: &str) -> bool {
    matches!(get(pod, addr), Ok((0, _)) | Err(_))
}

fn config_dump(pod: &Netns, admin: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&http_get(pod, admin, "/config_dump")?).ok()
}

#[test]
fn a_sidecar_with_only_its_pod_ip_serves_each_of_its_services_on_its_ports() {
    let logs = tempfile::tempdir().expect("temp dir");
    let logs = logs.path();
    let lan = Lan::new();
    let control_ns = Netns::new("cp");
    let clients = Netns::new("clients");
    let server = Netns::new("server");
    lan.attach(&clients, "10.203.8.1/24");
    lan.attach(&server, &format!("{POD_IP}/24"));
    lan.attach(&control_ns, "10.203.8.3/24");
    init(&server, &["--proxy-uid", PROXY_UID]);

    let mut command = control_ns.command(bin("weft-control-plane"));
    command
        .args(["--listen", CONTROL_PLANE, "--data-dir"])
        .arg(logs.join("control-plane-data"));
    let control_proc = Proc::spawn("control-plane", &mut command, logs);
    wait_for("the control plane to serve", WAIT, || {
        control_proc
            .log_text()
            .contains("control plane serving")
            .then_some(())
    });
    let cp = Control {
        netns: control_ns,
        _proc: control_proc,
    };
    cp.apply(&mesh(), logs);

    let _app = serve(
        &server,
        "server-app",
        &[
            "http:web-app=0.0.0.0:8080",
            "http:admin-app=0.0.0.0:9090",
            "http:spare-app=0.0.0.0:7070",
        ],
        logs,
    );
    // Nothing about its services but the pod IP.
    let _server_proxy = proxy(
        &server,
        &cp,
        "server",
        &["--workload-address", POD_IP],
        logs,
    );
    // Two callers in one namespace, without capture: explicit listeners for each
    // service (frontend: web 9001, admin 9002; ops: 9011, 9012).
    let caller = |account, admin, outbound, inbound, web, admin_service| {
        let flags = [
            "--admin".to_owned(),
            format!("127.0.0.1:{admin}"),
            "--outbound".to_owned(),
            format!("127.0.0.1:{outbound}"),
            "--inbound".to_owned(),
            format!("127.0.0.1:{inbound}"),
            "--upstream".to_owned(),
            format!("shop/web=127.0.0.1:{web}"),
            "--upstream".to_owned(),
            format!("shop/admin=127.0.0.1:{admin_service}"),
        ];
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        proxy(&clients, &cp, account, &flags, logs)
    };
    let _frontend = caller("frontend", 15020, 15001, 15006, 9001, 9002);
    let _ops = caller("ops", 15021, 15002, 15007, 9011, 9012);

    // The server learns both services from the endpoints at its IP.
    let learned = wait_for("the server to learn its services", WAIT, || {
        let dump = config_dump(&server, ADMIN)?;
        let local = &dump["local_workload"];
        (local["services"] == serde_json::json!(["shop/admin", "shop/web"])).then(|| local.clone())
    });
    assert_eq!(learned["source"], "endpoints", "{learned:#}");
    assert_eq!(learned["address"], POD_IP, "{learned:#}");
    let port = |number: u16| {
        learned["ports"]
            .as_array()
            .and_then(|ports| ports.iter().find(|p| p["port"] == number))
            .cloned()
            .unwrap_or_else(|| panic!("no port {number} in {learned:#}"))
    };
    let web_port = port(8080);
    assert_eq!(web_port["mtls"], "STRICT", "{learned:#}");
    assert_eq!(web_port["protocol"], "http1", "{learned:#}");
    assert_eq!(web_port["metrics_service"], "shop/web", "{learned:#}");
    assert_eq!(port(9090)["metrics_service"], "shop/admin", "{learned:#}");
    assert_eq!(learned["other_ports"]["mtls"], "PERMISSIVE", "{learned:#}");
    wait_for("the server's certificate", WAIT, || {
        http_get(&server, ADMIN, "/ready")
    });

    // Each caller reaches the service its identity is allowed, and only that one.
    wait_for("the frontend to reach web over mTLS", WAIT, || {
        answered(&clients, "127.0.0.1:9001")
    });
    wait_for("ops to reach admin over mTLS", WAIT, || {
        answered(&clients, "127.0.0.1:9012")
    });
    let web_app = Some("web-app".to_owned());
    assert_eq!(answered(&clients, "127.0.0.1:9001"), web_app);
    let admin_app = Some("admin-app".to_owned());
    assert_eq!(answered(&clients, "127.0.0.1:9012"), admin_app);
    assert_eq!(status(&clients, "127.0.0.1:9011"), 403, "ops to web");
    assert_eq!(status(&clients, "127.0.0.1:9002"), 403, "frontend to admin");

    // STRICT closes plaintext on the services' ports; the port no service owns
    // is PERMISSIVE and unguarded.
    let [plain_web, plain_admin, plain_spare] =
        [8080, 9090, 7070].map(|port| format!("{POD_IP}:{port}"));
    assert!(closed(&clients, &plain_web));
    assert!(closed(&clients, &plain_admin));
    let spare_app = Some("spare-app".to_owned());
    assert_eq!(answered(&clients, &plain_spare), spare_app);

    // Inbound series carry the service owning the port (summed over the callers'
    // identities); each policy counts under its own service.
    let metrics = http_get(&server, ADMIN, "/metrics").expect("server metrics");
    let inbound = |service: &str, tls: &str| {
        metric_sum(
            &metrics,
            "weft_requests_total",
            &[
                "direction=\"inbound\"",
                &format!("service=\"{service}\""),
                &format!("tls=\"{tls}\""),
            ],
        )
    };
    assert!(inbound("shop/web", "true") >= 3.0, "{metrics}");
    assert!(inbound("shop/admin", "true") >= 3.0, "{metrics}");
    assert_eq!(inbound("", "false"), 1.0, "{metrics}");
    for (policy, service) in [("web-callers", "web"), ("admin-callers", "admin")] {
        let count = |decision: &str| {
            metric_value(
                &metrics,
                &[
                    &format!("weft_authz_{decision}_total{{"),
                    &format!("policy=\"shop/{policy}\""),
                    &format!("service=\"shop/{service}\""),
                ],
            )
        };
        assert_eq!(count("denied"), Some(1.0), "{policy}: {metrics}");
        assert!(count("allowed") >= Some(2.0), "{policy}: {metrics}");
    }
    promtool_check(&metrics);

    // Membership follows the endpoints: a pod not ready (listed unhealthy) keeps
    // its service; a pod no longer in admin's endpoints no longer serves admin.
    let changed = mesh()
        .replace(
            "port: 8080, portName: http,",
            "port: 8080, portName: http, health: unhealthy,",
        )
        .replace(
            &format!("{{address: {POD_IP}, port: 9090"),
            "{address: 10.203.8.9, port: 9090",
        );
    cp.apply(&changed, logs);
    wait_for("the server to see both changes", WAIT, || {
        let dump = config_dump(&server, ADMIN)?;
        let endpoints = dump["resources"]["endpoints"].to_string();
        let services = &dump["local_workload"]["services"];
        (endpoints.contains("unhealthy") && *services == serde_json::json!(["shop/web"]))
            .then_some(())
    });
    assert!(closed(&clients, &plain_web), "still STRICT while not ready");
    assert_eq!(
        answered(&clients, &plain_admin),
        admin_app,
        "no longer admin's"
    );
}
