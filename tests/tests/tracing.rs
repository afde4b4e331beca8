//! Tracing end to end: the demo shop's four services (`weft-shop`) each behind its
//! own sidecar, tracing on at 100% for each, the control plane's default collector
//! pointing at a real OTLP/gRPC receiver (`tests/scripts/otlp_receiver.py`: the
//! OpenTelemetry project's published protos served by Python grpcio), and curl
//! playing an instrumented shopper behind a client sidecar.
//!
//! - One journey (register, add to cart, order) sent with one `traceparent` lands
//!   in one trace: a CLIENT span per outbound hop and a SERVER span per inbound
//!   hop, each SERVER span the child of the CLIENT span that called it, each CLIENT
//!   span the child of the SERVER span of the request its app was serving, across
//!   users, products (gRPC), cart and orders; with the HTTP and RPC attributes.
//! - A request without context starts a trace at the first sidecar.
//! - Through an echo app: a caller's sampled=0 passes on untouched and records
//!   nothing; a 0% share records nothing and adds nothing; B3 in gives
//!   B3 out; a service with tracing off passes its headers untouched, until
//!   `weftctl apply` turns it on.
//!
//! Absence is checked after a later sampled request's spans arrived: each proxy
//! sends its spans in the order its requests ended, so a span of an earlier request
//! would have arrived first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;
use weft_e2e::mesh::{shop_service, weftctl_ok, workload_flags, App, ControlPlane, Proxy};
use weft_e2e::{bin, free_port, grpc, loopback, wait_for, Proc};

const WAIT: Duration = Duration::from_secs(30);
const RECEIVER: &str = include_str!("../scripts/otlp_receiver.py");

/// The journey's trace, and the span of the "shopper" that sent it (which this
/// test does not export: it is the app's own).
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const JOURNEY: &str = "00f067aa0ba902b7";

/// The receiver, killed on drop; its spans as JSON lines in `out`.
struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(dir: &Path) -> Receiver {
        let script = dir.join("otlp_receiver.py");
        std::fs::write(&script, RECEIVER).expect("write the receiver");
        let out = dir.join("spans.jsonl");
        let (child, port) = grpc::python_server(&script, &[&out]);
        Receiver { child, port, out }
    }

    fn spans(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits until the trace has `count` spans; more than that fails.
    fn trace(&self, trace: &str, count: usize) -> Vec<Value> {
        let spans = wait_for(&format!("{count} spans of trace {trace}"), WAIT, || {
            let spans: Vec<Value> = self
                .spans()
                .into_iter()
                .filter(|s| s["trace_id"] == trace)
                .collect();
            (spans.len() >= count).then_some(spans)
        });
        assert_eq!(spans.len(), count, "{spans:#?}");
        spans
    }
}

/// The shop's services, tracing at 100% with the control plane's collector; and
/// three echo services on one app: tracing at 100%, at 0%, and off.
fn mesh(echo: SocketAddr) -> String {
    let traced = "  telemetry: {tracing: {samplingPercent: 100}}";
    let mut yaml = String::new();
    for (name, protocol) in [
        ("users", "http1"),
        ("products", "grpc"),
        ("cart", "http1"),
        ("orders", "http1"),
    ] {
        yaml.push_str(&format!(
            "kind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  ports: \
             [{{port: 80, protocol: {protocol}}}]\n  hostnames: [{name}.shop]\n{traced}\n---\n"
        ));
    }
    yaml.push_str(&shop_service("echo-on", "http1", echo, traced));
    yaml.push_str(&shop_service(
        "echo-zero",
        "http1",
        echo,
        "  telemetry: {tracing: {samplingPercent: 0}}",
    ));
    yaml.push_str(&shop_service("echo-off", "http1", echo, ""));
    yaml
}

/// One shop role behind its sidecar: the app on a free port, its proxy
/// registering the role's endpoint, with an `--upstream` listener per service the
/// app calls (`(service, flag)`: the app reaches it at `http://<listener>`).
struct Role {
    _app: Proc,
    proxy: Proxy,
}

fn role(logs: &Path, cp: &str, name: &str, calls: &[(&str, &str)]) -> Role {
    let listen = loopback(free_port());
    let mut command = Command::new(bin("weft-shop"));
    command.args([name, "--listen", &listen.to_string(), "--replica", name]);
    let mut upstreams = Vec::new();
    for (service, flag) in calls {
        let local = loopback(free_port());
        command.arg(flag).arg(format!("http://{local}"));
        upstreams.push(format!("shop/{service}={local}"));
    }
    let mut app = Proc::spawn(name, &mut command, logs);
    wait_for(&format!("{name} to listen"), WAIT, || {
        assert!(app.is_running(), "{name} exited: {}", app.log_text());
        app.log_text().contains("listening on").then_some(())
    });
    let proxy = Proxy::start_registered(logs, &format!("{name}-proxy"), cp, |inbound| {
        let mut flags = vec!["--namespace".to_owned(), "shop".to_owned()];
        flags.extend(workload_flags(name, inbound, &listen.to_string()));
        for upstream in &upstreams {
            flags.extend(["--upstream".to_owned(), upstream.clone()]);
        }
        flags
    });
    Role { _app: app, proxy }
}

/// A request through the client sidecar; the response's status and body.
fn curl(method: &str, url: &str, headers: &[&str], body: Option<&str>) -> (u16, String) {
    let mut command = Command::new("curl");
    command.args(["-s", "-w", "\n%{http_code}", "-X", method, url]);
    for header in headers {
        command.args(["-H", header]);
    }
    if let Some(body) = body {
        command.args(["-H", "content-type: application/json", "-d", body]);
    }
    let output = command.output().expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

fn traceparent(trace: &str, parent: &str, flags: &str) -> String {
    format!("traceparent: 00-{trace}-{parent}-{flags}")
}

/// The headers the echo app received, by name (first value).
fn echoed(body: &str) -> BTreeMap<String, String> {
    let echo: Value = serde_json::from_str(body.trim()).expect("the echo is JSON");
    echo["headers"]
        .as_object()
        .expect("headers")
        .iter()
        .map(|(name, values)| (name.clone(), values[0].as_str().unwrap_or("").to_owned()))
        .collect()
}

fn attribute<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

fn service_of(span: &Value) -> &str {
    span["resource"]["service.name"].as_str().unwrap_or("")
}

#[test]
fn a_journey_through_the_shop_is_one_trace_and_decisions_are_honoured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path();
    let receiver = Receiver::start(logs);
    let collector = format!("127.0.0.1:{}", receiver.port);
    let cp = ControlPlane::start(
        logs,
        &logs.join("data"),
        free_port(),
        &["--trace-collector", &collector],
    );
    let cp_addr = cp.address();
    let echo = App::start(logs, "echo", &["--echo", "true"]);
    weftctl_ok(&cp_addr, &["apply", "-f", "-"], Some(&mesh(echo.addr)));

    let _users = role(logs, &cp_addr, "users", &[]);
    let _products = role(logs, &cp_addr, "products", &[]);
    let _cart = role(logs, &cp_addr, "cart", &[("products", "--products")]);
    let _orders = role(
        logs,
        &cp_addr,
        "orders",
        &[("users", "--users"), ("products", "--products")],
    );
    let mut listeners = BTreeMap::new();
    let mut flags = vec!["--namespace".to_owned(), "shop".to_owned()];
    for service in [
        "users",
        "cart",
        "orders",
        "echo-on",
        "echo-zero",
        "echo-off",
    ] {
        let listen = loopback(free_port());
        flags.extend(["--upstream".to_owned(), format!("shop/{service}={listen}")]);
        listeners.insert(service, format!("http://{listen}"));
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let shopper = Proxy::start(logs, "shopper-proxy", &cp_addr, &flags);
    for proxy in [&shopper, &_users.proxy, &_cart.proxy, &_orders.proxy] {
        proxy.wait_ready();
    }

    // The journey, every call with the shopper's one context. The first call also
    // waits until every proxy has the others' endpoints.
    let journey = traceparent(TRACE, JOURNEY, "01");
    let user = wait_for("the journey's first call", WAIT, || {
        let (status, body) = curl(
            "POST",
            &format!("{}/users", listeners["users"]),
            &[&journey],
            Some(r#"{"name": "ada"}"#),
        );
        (status == 201).then(|| serde_json::from_str::<Value>(&body).expect("a user")["id"].clone())
    });
    let (status, body) = curl(
        "POST",
        &format!("{}/carts/{user}/items", listeners["cart"]),
        &[&journey],
        Some(r#"{"product": "ceramic-mug", "quantity": 2}"#),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = curl(
        "POST",
        &format!("{}/orders", listeners["orders"]),
        &[&journey],
        Some(&format!(
            r#"{{"user": {user}, "items": [{{"product": "ceramic-mug", "quantity": 2}}]}}"#
        )),
    );
    assert_eq!(status, 201, "{body}");

    // shopper→users (2), shopper→cart→products (4), shopper→orders (2), orders→users
    // (2), orders→products (2).
    let spans = receiver.trace(TRACE, 12);
    check_journey(&spans);

    no_context_starts_a_trace(&receiver, &listeners);
    decisions_at_the_echo(&receiver, &listeners);

    // Turned on at run time: the next requests of echo-off record spans.
    let traced = "  telemetry: {tracing: {samplingPercent: 100}}";
    let change = shop_service("echo-off", "http1", echo.addr, traced);
    weftctl_ok(&cp_addr, &["apply", "-f", "-"], Some(&change));
    wait_for("a span of echo-off after the push", WAIT, || {
        curl("GET", &format!("{}/e", listeners["echo-off"]), &[], None);
        let spans = receiver.spans();
        spans.into_iter().find(|s| attribute(s, "url.path") == "/e")
    });
}

/// Parent links, kinds and attributes of the journey's spans.
fn check_journey(spans: &[Value]) {
    let by_id: BTreeMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["span_id"].as_str().expect("span id"), s))
        .collect();
    assert_eq!(by_id.len(), spans.len(), "span ids are unique");
    let mut servers = BTreeSet::new();
    for span in spans {
        let parent = span["parent_span_id"].as_str().expect("parent");
        let service = service_of(span);
        assert_eq!(span["resource"]["service.namespace"], "shop", "{span}");
        match span["kind"].as_str() {
            Some("CLIENT") if service == "shopper-proxy" => {
                assert_eq!(parent, JOURNEY, "the shopper's calls: children of its span")
            }
            Some("CLIENT") => {
                let caller = by_id
                    .get(parent)
                    .unwrap_or_else(|| panic!("no parent: {span}"));
                assert_eq!(caller["kind"], "SERVER", "{span}");
                assert_eq!(service_of(caller), service, "the request its app served");
            }
            Some("SERVER") => {
                let caller = by_id
                    .get(parent)
                    .unwrap_or_else(|| panic!("no parent: {span}"));
                assert_eq!(caller["kind"], "CLIENT", "{span}");
                assert_eq!(
                    attribute(caller, "weft.service").as_str(),
                    Some(format!("shop/{service}").as_str()),
                    "a SERVER span's parent called its service: {span}"
                );
                servers.insert(service.to_owned());
            }
            other => panic!("kind {other:?}: {span}"),
        }
        assert_eq!(span["status"], "UNSET", "{span}");
        assert_eq!(
            attribute(span, "http.response.status_code")
                .as_i64()
                .map(|c| c / 100),
            Some(2)
        );
        assert!(attribute(span, "server.address").is_string(), "{span}");
        assert!(attribute(span, "url.path").is_string(), "{span}");
        assert_eq!(attribute(span, "weft.retries"), 0);
        let direction = match span["kind"].as_str() {
            Some("CLIENT") => "outbound",
            _ => "inbound",
        };
        assert_eq!(attribute(span, "weft.direction"), direction);
    }
    let all: BTreeSet<String> = ["users", "products", "cart", "orders"]
        .map(str::to_owned)
        .into();
    assert_eq!(servers, all, "every service served in the trace");

    let grpc: Vec<&Value> = spans
        .iter()
        .filter(|s| attribute(s, "rpc.system") == "grpc")
        .collect();
    assert_eq!(grpc.len(), 4, "two calls to products, each on both sides");
    for span in grpc {
        assert_eq!(attribute(span, "rpc.service"), "shop.v1.Products");
        assert_eq!(attribute(span, "rpc.method"), "GetProduct");
        assert_eq!(attribute(span, "rpc.grpc.status_code"), 0);
        assert_eq!(attribute(span, "network.protocol.version"), "2");
        assert_eq!(span["name"], "shop.v1.Products/GetProduct");
    }
    let order = spans
        .iter()
        .find(|s| s["kind"] == "SERVER" && service_of(s) == "orders")
        .expect("orders served");
    assert_eq!(order["name"], "POST");
    assert_eq!(attribute(order, "http.request.method"), "POST");
    assert_eq!(attribute(order, "url.path"), "/orders");
    assert_eq!(attribute(order, "url.scheme"), "http");
    assert_eq!(attribute(order, "weft.service"), "shop/orders");
    assert!(attribute(order, "weft.endpoint").is_string(), "{order}");
}

/// A request with no context: the client sidecar starts the trace, and the next
/// hops join it.
fn no_context_starts_a_trace(receiver: &Receiver, listeners: &BTreeMap<&str, String>) {
    let (status, body) = curl("GET", &format!("{}/users/1", listeners["users"]), &[], None);
    assert_eq!(status, 200, "{body}");
    let root = wait_for("the new trace's root", WAIT, || {
        receiver
            .spans()
            .into_iter()
            .find(|s| s["parent_span_id"] == "" && attribute(s, "url.path") == "/users/1")
    });
    assert_eq!(root["kind"], "CLIENT");
    let trace = root["trace_id"].as_str().expect("trace id");
    let spans = receiver.trace(trace, 2);
    let server = spans
        .iter()
        .find(|s| s["kind"] == "SERVER")
        .expect("users served");
    assert_eq!(server["parent_span_id"], root["span_id"]);
}

/// Through the echo app, which shows the headers it got.
fn decisions_at_the_echo(receiver: &Receiver, listeners: &BTreeMap<&str, String>) {
    // A GET of `path` on `service` with `headers`: what reached the app.
    let echo = |service: &str, path: &str, headers: &[&str]| {
        let url = format!("{}{path}", listeners[service]);
        let (status, body) = curl("GET", &url, headers, None);
        assert_eq!(status, 200, "{body}");
        echoed(&body)
    };
    let value = |header: &str| header.split_once(": ").map(|(_, v)| v.to_owned());

    // The caller said no: nothing recorded, its header passed on as it came.
    let declined = "11111111111111111111111111111111";
    let header = traceparent(declined, JOURNEY, "00");
    assert_eq!(
        echo("echo-on", "/a", &[&header])
            .get("traceparent")
            .cloned(),
        value(&header)
    );

    // A 0% share records nothing, and what it does not record passes as it came:
    // no context added, a B3 context that left the decision open kept as it was.
    assert!(!echo("echo-zero", "/b", &[]).contains_key("traceparent"));
    let undecided = format!("b3: {}-{JOURNEY}", "33333333333333333333333333333333");
    assert_eq!(
        echo("echo-zero", "/b", &[&undecided]).get("b3").cloned(),
        value(&undecided)
    );

    // Tracing off: headers untouched, none added.
    let off = traceparent("22222222222222222222222222222222", JOURNEY, "01");
    assert_eq!(
        echo("echo-off", "/c", &[&off]).get("traceparent").cloned(),
        value(&off)
    );
    assert!(!echo("echo-off", "/c", &[]).contains_key("traceparent"));

    // B3 in, B3 out: the same trace, this hop's span, the caller's as parent.
    let b3_trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let caller = "e457b5a2e4d86bd1";
    let got = echo("echo-on", "/d", &[&format!("b3: {b3_trace}-{caller}-1")]);
    assert!(!got.contains_key("traceparent"), "only B3 goes on: {got:?}");
    let fields: Vec<&str> = got["b3"].split('-').collect();
    assert_eq!(fields.len(), 4, "{got:?}");
    assert_eq!((fields[0], fields[2], fields[3]), (b3_trace, "1", caller));
    let spans = receiver.trace(b3_trace, 1);
    assert_eq!(spans[0]["span_id"], fields[1]);
    assert_eq!(spans[0]["parent_span_id"], caller);
    assert_eq!(spans[0]["kind"], "CLIENT");

    // The B3 span came after the others, from the same proxy.
    let spans = receiver.spans();
    for quiet in [
        declined,
        "22222222222222222222222222222222",
        "33333333333333333333333333333333",
    ] {
        assert!(
            spans.iter().all(|s| s["trace_id"] != quiet),
            "trace {quiet} was not to be recorded"
        );
    }
    for path in ["/b", "/c"] {
        assert!(
            spans.iter().all(|s| attribute(s, "url.path") != path),
            "{path}"
        );
    }
}
