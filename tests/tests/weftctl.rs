//! weftctl against a real control plane: apply, get in every format, the YAML round
//! trip, a rejected file that changes nothing, delete, and the status of a scripted
//! proxy that NACKs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use weft_e2e::mesh::ControlPlane;
use weft_e2e::{bin, free_port, run, wait_for};

const MESH: &str = "\
kind: Service
metadata: {name: orders, namespace: shop}
spec:
  ports:
  - {name: http, port: 80, protocol: http1}
  - {name: grpc, port: 9090, protocol: grpc}
  virtualIPs: [10.96.0.10]
  hostnames: [orders.shop]
  loadBalancer: round_robin
  retries: {retryOn: [5xx, unavailable], maxRetries: 1, perTryTimeoutMs: 500}
  outlierDetection: {consecutiveFailures: 3}
  circuitBreakers: {maxRequests: 100}
---
kind: Endpoints
metadata: {name: orders, namespace: shop}
spec:
  endpoints:
  - address: 10.0.0.5
    port: 8080
    portName: http
    weight: 2
    locality: {region: eu-west, zone: eu-west-1a}
    labels: {version: v2}
  - {address: 10.0.0.6, port: 9090, portName: grpc, health: unhealthy}
";

/// Starts a control plane on a free port and waits until weftctl gets an answer.
fn control_plane(scratch: &Scratch) -> (ControlPlane, Ctl) {
    let process = ControlPlane::start(&scratch.0, &scratch.0.join("data"), free_port(), &[]);
    let ctl = Ctl {
        address: format!("http://{}", process.address()),
    };
    wait_for(
        "the control plane to answer",
        Duration::from_secs(20),
        || ctl.run(&["get", "svc"]).status.success().then_some(()),
    );
    (process, ctl)
}

/// A scratch directory removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("weftctl-e2e-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Ctl {
    address: String,
}

impl Ctl {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin("weftctl"));
        command
            .env_remove("WEFT_CONTROL_PLANE")
            .arg("--control-plane")
            .arg(&self.address)
            .args(args);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        run(&mut self.command(args))
    }

    fn with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weftctl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait for weftctl")
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        succeeded(args, self.run(args))
    }

    /// Runs and expects exit 1; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        failed(args, self.run(args))
    }
}

fn succeeded(args: &[&str], output: Output) -> String {
    assert!(
        output.status.success(),
        "weftctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn failed(args: &[&str], output: Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "weftctl {args:?} should fail; stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The cells of a table's first row (after the header).
fn first_row(table: &str) -> Vec<&str> {
    table
        .lines()
        .nth(1)
        .expect("a row")
        .split_whitespace()
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.to_string_lossy().into_owned()
}

#[test]
fn apply_get_round_trip_reject_and_delete() {
    let scratch = Scratch::new();
    let (_control_plane, ctl) = control_plane(&scratch);

    let mesh = write(&scratch.0, "mesh.yaml", MESH);
    assert_eq!(
        ctl.ok(&["apply", "-f", &mesh]),
        "service/shop/orders created\nendpoints/shop/orders created\n"
    );
    assert_eq!(
        ctl.ok(&["apply", "-f", &mesh]),
        "service/shop/orders unchanged\nendpoints/shop/orders unchanged\n"
    );

    // Table.
    let table = ctl.ok(&["get", "services"]);
    let row = first_row(&table);
    assert_eq!(
        row,
        [
            "shop",
            "orders",
            // Revision 1 is the CA's trust bundle, published at the first start.
            "2",
            "http:80/http1,grpc:9090/grpc",
            "10.96.0.10",
            "orders.shop",
            "round_robin"
        ]
    );
    let table = ctl.ok(&["get", "ep", "shop/orders"]);
    assert!(
        table.contains("10.0.0.5:8080,10.0.0.6:9090 (unhealthy)"),
        "{table}"
    );

    // JSON: one object for a named resource, a list otherwise.
    let json: serde_json::Value =
        serde_json::from_str(&ctl.ok(&["get", "ep", "shop/orders", "-o", "json"])).expect("json");
    assert_eq!(json["kind"], "Endpoints");
    assert_eq!(json["spec"]["endpoints"][0]["weight"], 2);
    assert_eq!(json["spec"]["endpoints"][0]["labels"]["version"], "v2");
    assert_eq!(json["spec"]["endpoints"][1]["health"], "unhealthy");
    let json: serde_json::Value =
        serde_json::from_str(&ctl.ok(&["get", "svc", "-o", "json"])).expect("json");
    assert_eq!(json[0]["spec"]["virtualIPs"][0], "10.96.0.10");
    assert_eq!(json[0]["spec"]["retries"]["perTryTimeoutMs"], 500);
    assert_eq!(
        json[0]["spec"]["outlierDetection"]["consecutiveFailures"],
        3
    );

    // YAML re-applies unchanged.
    for kind in ["svc", "ep"] {
        let yaml = ctl.ok(&["get", kind, "-o", "yaml"]);
        assert!(yaml.contains("namespace: shop"), "{yaml}");
        let args = ["apply", "-f", "-"];
        let out = succeeded(&args, ctl.with_stdin(&args, &yaml));
        assert!(out.ends_with("shop/orders unchanged\n"), "{out}");
    }

    // Rejected files name the field and change nothing (a valid document in the same
    // file is not written either: the request is atomic).
    let before = ctl.ok(&["get", "svc", "-o", "yaml"]);
    let valid_new = "kind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80, protocol: http1}]\n---\n";
    for (bad, expected) in [
        (
            "kind: Service\nmetadata: {name: orders, namespace: shop}\nspec:\n  ports: [{port: 0, protocol: http1}]\n",
            "ports[0].port",
        ),
        (
            "kind: Service\nmetadata: {name: orders, namespace: shop}\nspec:\n  ports: [{port: 80, protocol: smtp}]\n",
            "ports[0].protocol",
        ),
        (
            "kind: Endpoints\nmetadata: {name: ghost}\nspec:\n  endpoints: [{address: 10.0.0.1, port: 80}]\n",
            "service default/ghost does not exist",
        ),
        (
            "kind: Service\nmetadata: {name: orders, namespace: shop}\nspec:\n  ports: [{port: 80, protocol: http1}]\n  retries: {retryOn: [sometimes]}\n",
            "retries.retry_on[0]",
        ),
        (
            "kind: Service\nmetadata: {name: orders, namespace: shop}\nspec:\n  ports: [{port: 80, protcol: tcp}]\n",
            "document 2: spec.ports[0]: unknown field `protcol`",
        ),
    ] {
        let file = write(&scratch.0, "bad.yaml", &format!("{valid_new}{bad}"));
        let stderr = ctl.fails(&["apply", "-f", &file]);
        assert!(
            stderr.starts_with("weftctl: ") && stderr.contains(expected),
            "expected {expected:?} in {stderr:?}"
        );
        assert_eq!(ctl.ok(&["get", "svc", "-o", "yaml"]), before, "after {bad}");
    }

    // Delete.
    assert_eq!(
        ctl.ok(&["delete", "endpoints", "shop/orders"]),
        "endpoints/shop/orders deleted\n"
    );
    assert_eq!(
        ctl.ok(&["delete", "svc", "shop/orders"]),
        "service/shop/orders deleted\n"
    );
    let stderr = ctl.fails(&["delete", "svc", "shop/orders"]);
    assert!(stderr.contains("not found"), "{stderr}");
    assert_eq!(ctl.ok(&["get", "svc", "-o", "json"]).trim(), "[]");

    // No proxies are connected in this test; status still answers.
    let json: serde_json::Value =
        serde_json::from_str(&ctl.ok(&["status", "-o", "json"])).expect("json");
    assert_eq!(json, serde_json::json!([]));
}

const ROUTES: &str = "kind: HTTPRoute
metadata: {name: split, namespace: shop}
spec:
  parentRefs: [{group: core, kind: Service, name: orders, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-canary, value: '1'}]}]
    filters: [{type: weft.io/Fault, fault: {abort: {httpStatus: 503, percent: 5}}}]
    backendRefs: [{name: orders, weight: 90}, {name: orders, port: 9090, weight: 10}]
    timeouts: {request: 90s}
---
kind: GRPCRoute
metadata: {name: rpc, namespace: shop}
spec:
  parentRefs: [{name: orders, port: 9090}]
  rules:
  - matches: [{method: {service: shop.Orders, method: Get}}]
    retry: {codes: [UNAVAILABLE], attempts: 1}
";

#[test]
fn routes_apply_print_reapply_unchanged_and_refuse_missing_services() {
    let scratch = Scratch::new();
    let (_control_plane, ctl) = control_plane(&scratch);
    let mesh = write(&scratch.0, "mesh.yaml", &format!("{MESH}---\n{ROUTES}"));
    assert_eq!(
        ctl.ok(&["apply", "-f", &mesh]),
        "service/shop/orders created\nendpoints/shop/orders created\n\
         httproute/shop/split created\ngrpcroute/shop/rpc created\n"
    );

    let table = ctl.ok(&["get", "httproutes"]);
    let row = first_row(&table);
    // NAMESPACE NAME VERSION PARENTS (no HOSTNAMES) RULES BACKENDS
    assert_eq!(
        [row[0], row[1], row[3], row[4], row[5]],
        ["shop", "split", "orders:80", "<none>", "1"],
        "{table}"
    );
    assert!(table.contains("orders (90),orders (10)"), "{table}");
    assert!(ctl
        .ok(&["get", "grpcroute", "shop/rpc"])
        .contains("orders:9090"));

    // What get prints (canonical, with the creation time) applies unchanged.
    for kind in ["httproutes", "grpcroutes"] {
        let yaml = ctl.ok(&["get", kind, "-o", "yaml"]);
        assert!(yaml.contains("creationTimestamp:"), "{yaml}");
        let args = ["apply", "-f", "-"];
        let out = succeeded(&args, ctl.with_stdin(&args, &yaml));
        assert!(out.ends_with("unchanged\n"), "{out}");
    }
    let yaml = ctl.ok(&["get", "httproute", "shop/split", "-o", "yaml"]);
    assert!(
        yaml.contains("request: 1m30s"),
        "canonical duration: {yaml}"
    );

    for (bad, expected) in [
        (
            ROUTES.replace("name: orders, port: 80", "name: ghost"),
            "HTTPRoute shop/split: spec.parentRefs[0]: service shop/ghost does not exist",
        ),
        (
            ROUTES.replace(
                "type: PathPrefix, value: /api",
                "type: RegularExpression, value: '/api('",
            ),
            "spec.rules[0].matches[0].path.value",
        ),
        (
            ROUTES.replace(
                "name: orders, port: 9090}]\n  rules",
                "name: orders, port: 80}]\n  rules",
            ),
            "GRPCRoute shop/rpc: spec.parentRefs[0].port: port 80 of service shop/orders is http1",
        ),
        (
            ROUTES.replace(
                "parentRefs: [{group: core,",
                "parentRefs: [{sectionName: http, group: core,",
            ),
            "unknown field `sectionName`",
        ),
    ] {
        let file = write(&scratch.0, "bad.yaml", &bad);
        let stderr = ctl.fails(&["apply", "-f", &file]);
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr:?}"
        );
    }

    assert_eq!(
        ctl.ok(&["delete", "httproute", "shop/split"]),
        "httproute/shop/split deleted\n"
    );
    assert!(ctl.ok(&["get", "grpcroutes"]).contains("rpc"));
}

/// A proxy scripted over the Discovery API rejects the service it is pushed; status
/// must show it NACKED with the message in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_proxys_nack_in_full() {
    use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
    use weft_proto::resource::Kind;
    use weft_proto::v1;
    use weft_proto::v1::discovery_request::Request;

    let scratch = Scratch::new();
    let (_control_plane, ctl) = tokio::task::block_in_place(|| control_plane(&scratch));
    let mesh = write(&scratch.0, "mesh.yaml", MESH);
    tokio::task::block_in_place(|| ctl.ok(&["apply", "-f", &mesh]));

    let mut discovery = v1::discovery_client::DiscoveryClient::connect(ctl.address.clone())
        .await
        .expect("connect to discovery");
    let (requests, outbound) = tokio::sync::mpsc::channel(4);
    let send = |request| {
        let requests = requests.clone();
        async move {
            requests
                .send(v1::DiscoveryRequest {
                    request: Some(request),
                })
                .await
                .expect("send on the stream");
        }
    };
    send(Request::Hello(v1::Hello {
        node: Some(v1::Node {
            id: "orders-1.shop".into(),
            workload: None,
            build: "scripted".into(),
            admin_address: String::new(),
        }),
        known: vec![],
        subscriptions: vec![v1::Subscription {
            type_url: Kind::Service.type_url().into(),
            subscribe: vec!["*".into()],
            unsubscribe: vec![],
        }],
    }))
    .await;
    let mut responses = discovery
        .stream(ReceiverStream::new(outbound))
        .await
        .expect("open the stream")
        .into_inner();
    let push = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let response = responses
                .message()
                .await
                .expect("stream")
                .expect("a response");
            if response.type_url == Kind::Service.type_url() && !response.resources.is_empty() {
                return response;
            }
        }
    })
    .await
    .expect("the service is pushed");
    let reason = "load_balancer: unknown policy \"round_robin\" in this build; keeping the last good service";
    send(Request::Nack(v1::Nack {
        nonce: push.nonce.clone(),
        errors: vec![v1::ResourceError {
            name: push.resources[0].name.clone(),
            version: push.resources[0].version,
            message: reason.into(),
        }],
    }))
    .await;

    let table = tokio::task::block_in_place(|| {
        wait_for("status to show the NACK", Duration::from_secs(10), || {
            let table = ctl.ok(&["status"]);
            table.contains("NACKED").then_some(table)
        })
    });
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[1].starts_with("orders-1.shop "), "{table}");
    assert!(
        lines[2]
            .trim_start()
            .starts_with("NACK weft.v1.Service: shop/orders@")
            && lines[2].ends_with(reason),
        "the NACK message is printed in full: {table}"
    );
    let json: serde_json::Value = serde_json::from_str(&tokio::task::block_in_place(|| {
        ctl.ok(&["status", "-o", "json"])
    }))
    .expect("json");
    assert_eq!(json[0]["state"], "NACKED");
    let nack = json[0]["types"]
        .as_array()
        .expect("types")
        .iter()
        .find_map(|t| t["lastNack"].as_str())
        .expect("a lastNack");
    assert!(nack.ends_with(reason), "{nack}");
    drop(requests);
}

#[test]
fn unreachable_control_plane_names_the_address() {
    let port = free_port();
    let ctl = Ctl {
        address: format!("127.0.0.1:{port}"),
    };
    let stderr = ctl.fails(&["get", "svc"]);
    assert!(
        stderr.contains(&format!(
            "cannot reach the control plane at 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let ctl = Ctl {
        address: "127.0.0.1:1".to_owned(),
    };
    let output = ctl.run(&["get", "routes"]);
    assert_eq!(output.status.code(), Some(2));
}
