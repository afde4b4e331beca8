//! Access logs end to end: the real control plane takes a Service's
//! `telemetry.accessLog` through `weftctl apply`, and the real client proxy
//! writes a JSON line on its stdout per sampled request, read back here from its
//! log. curl (HTTP/1.1) and h2load (h2c) make the traffic; a dead endpoint and an
//! injected fault give the response flags; a 10% share logs about 10% of the
//! requests; and applying the Service without `accessLog` stops the lines, all on
//! one proxy process that is never restarted. A server-side proxy logs its inbound
//! requests by its own service's setting, and grpcio's calls carry their status.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use weft_e2e::mesh::{named_app, shop_service, weftctl_ok, App, ControlPlane, Pod, Proxy};
use weft_e2e::{free_port, grpc, loopback, promtool_check, run, wait_for, which};

const WAIT: Duration = Duration::from_secs(30);

/// The access log lines the proxy has written so far (its stdout shares the log
/// file with its stderr; only access log lines are JSON objects).
fn lines(proxy: &Proxy) -> Vec<Value> {
    proxy
        .proc
        .log_text()
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The lines for requests whose path starts with `prefix`.
fn lines_for(proxy: &Proxy, prefix: &str) -> Vec<Value> {
    lines(proxy)
        .into_iter()
        .filter(|line| line["path"].as_str().is_some_and(|p| p.starts_with(prefix)))
        .collect()
}

/// `n` GETs of `path` on one keep-alive connection (curl's URL globbing); the
/// statuses.
fn curl_many(listen: SocketAddr, path: &str, n: usize, extra: &[&str]) -> Vec<u16> {
    let output = run(Command::new(which("curl"))
        .args(["-sS", "-w", "\n@@ %{http_code}\n"])
        .args(extra)
        .arg(format!("http://{listen}{path}?n=[1-{n}]")));
    let statuses: Vec<u16> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("@@ "))
        .map(|code| code.trim().parse().unwrap_or(0))
        .collect();
    assert_eq!(
        statuses.len(),
        n,
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    statuses
}

/// One GET's status; 0 when there was no answer (while a push is on its way).
fn answers(listen: SocketAddr, path: &str) -> u16 {
    let output = run(Command::new(which("curl"))
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{listen}{path}")));
    String::from_utf8_lossy(&output.stdout).parse().unwrap_or(0)
}

/// The services of the test: `web` (an app that answers) and `web2` (an app that
/// speaks HTTP/2 too, declared `http2` so that its listener takes h2c) with
/// `telemetry` (spec lines), `dead` (an endpoint nobody listens on) and `db`
/// (opaque TCP to the first app) with `others`, and an HTTPRoute on `web`
/// aborting `/fault`, and one on `web2` taking only `/h2`.
fn mesh(apps: [SocketAddr; 3], telemetry: &str, others: &str) -> String {
    let [web, web2, dead] = apps;
    shop_service("web", "http1", web, telemetry)
        + &shop_service("web2", "http2", web2, telemetry)
        + &shop_service("dead", "http1", dead, others)
        + &shop_service("db", "tcp", web, others)
        + "kind: HTTPRoute
metadata: {name: web-faults, namespace: shop}
spec:
  parentRefs: [{name: web, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /fault}}]
    filters: [{type: weft.io/Fault, fault: {abort: {httpStatus: 503, percent: 100}}}]
  - matches: [{path: {type: PathPrefix, value: /}}]
---
kind: HTTPRoute
metadata: {name: web2-h2, namespace: shop}
spec: {parentRefs: [{name: web2, port: 80}], rules: [{matches: [{path: {type: PathPrefix, value: /h2}}]}]}
"
}

/// Sends a request to `dead` (logged at 100% once its telemetry is on) and waits
/// for its line: the writer keeps order, so every line of a request that ended
/// before it is written by then.
fn mark(proxy: &Proxy, dead_listen: SocketAddr, name: &str) -> Value {
    let path = format!("/mark-{name}");
    assert!(curl_many(dead_listen, &path, 1, &[])[0] >= 500);
    wait_for(&format!("the line of {path}"), WAIT, || {
        lines_for(proxy, &path).pop()
    })
}

/// Applies `config` and waits until the proxy holds a newer `shop/web` than it did.
fn apply(cp: &ControlPlane, proxy: &Proxy, config: &str) {
    let before = proxy.version_of("services", "shop/web");
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(config));
    wait_for("the proxy to apply the push", WAIT, || {
        let now = proxy.version_of("services", "shop/web");
        (now.is_some() && now > before).then_some(())
    });
}

#[test]
fn access_logs_follow_the_service_setting_on_a_running_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let web = named_app("web");
    let web2 = App::start(dir.path(), "web2", &[]);
    let dead = loopback(free_port());
    let apps = [web, web2.addr, dead];
    let cp = ControlPlane::start(dir.path(), &dir.path().join("data"), free_port(), &[]);
    let (listen, h2_listen, dead_listen, db_listen) = (
        loopback(free_port()),
        loopback(free_port()),
        loopback(free_port()),
        loopback(free_port()),
    );
    let upstreams = [
        format!("shop/web={listen}"),
        format!("shop/web2={h2_listen}"),
        format!("shop/dead={dead_listen}"),
        format!("shop/db={db_listen}"),
    ];
    let mut flags = Vec::new();
    for upstream in &upstreams {
        flags.extend(["--upstream", upstream.as_str()]);
    }
    let mut proxy = Proxy::start(dir.path(), "client", &cp.address(), &flags);
    let pid = proxy.proc.pid();

    // Off by default: no lines.
    weftctl_ok(
        &cp.address(),
        &["apply", "-f", "-"],
        Some(&mesh(apps, "", "")),
    );
    proxy.wait_ready();
    wait_for("web to answer", WAIT, || {
        (answers(listen, "/ready") == 200).then_some(())
    });
    assert!(curl_many(listen, "/quiet", 50, &[])
        .iter()
        .all(|s| *s == 200));

    // On, every request: one line per request, with Envoy's fields.
    let all = "  telemetry: {accessLog: {}}";
    apply(&cp, &proxy, &mesh(apps, all, all));
    let headers = [
        "-A",
        "access-log-test/1",
        "-H",
        "x-request-id: req-42",
        "-H",
        "x-forwarded-for: 192.0.2.7",
    ];
    assert!(curl_many(listen, "/items", 20, &headers)
        .iter()
        .all(|s| *s == 200));
    let items = wait_for("20 lines for /items", WAIT, || {
        let found = lines_for(&proxy, "/items");
        (found.len() == 20).then_some(found)
    });
    assert!(lines_for(&proxy, "/quiet").is_empty(), "logged while off");
    let line = &items[0];
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["path"], "/items?n=1", "{line}");
    assert_eq!(line["protocol"], "HTTP/1.1", "{line}");
    assert_eq!(line["response_code"], 200, "{line}");
    assert_eq!(line["response_flags"], "-", "{line}");
    assert_eq!(line["bytes_sent"], 3, "{line}"); // "web"
    assert_eq!(line["upstream_host"], web.to_string(), "{line}");
    assert_eq!(line["upstream_cluster"], "shop/web", "{line}");
    assert_eq!(line["user_agent"], "access-log-test/1", "{line}");
    assert_eq!(line["request_id"], "req-42", "{line}");
    assert_eq!(line["x_forwarded_for"], "192.0.2.7", "{line}");
    assert_eq!(line["authority"], listen.to_string(), "{line}");
    assert_eq!(line["direction"], "outbound", "{line}");
    assert_eq!(
        line["downstream_local_address"],
        listen.to_string(),
        "{line}"
    );
    assert_eq!(line["retries"], 0, "{line}");
    assert!(line["duration"].as_u64().is_some(), "{line}");
    assert!(line["upstream_service_time"].as_u64().is_some(), "{line}");
    assert!(line["start_time"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    // HTTP/2 (h2c) from h2load: a line per stream, as HTTP/2.
    let output = run(Command::new(which("h2load")).args([
        "-n",
        "100",
        "-c",
        "2",
        "-m",
        "10",
        &format!("http://{h2_listen}/h2"),
    ]));
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(report.contains("100 succeeded"), "{report}");
    let h2 = wait_for("100 lines for /h2", WAIT, || {
        let found = lines_for(&proxy, "/h2");
        (found.len() == 100).then_some(found)
    });
    assert!(
        h2.iter().all(|l| l["protocol"] == "HTTP/2"
            && l["response_code"] == 200
            && l["response_flags"] == "-"),
        "{:?}",
        h2[0]
    );
    assert!(h2.iter().all(
        |l| l["upstream_host"] == web2.addr.to_string() && l["upstream_cluster"] == "shop/web2"
    ));

    // A streamed upload of undeclared length (h2, no content-length): its bytes
    // are counted as they pass.
    let mut upload = Command::new(which("curl"))
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-T",
            "-",
        ])
        .arg(format!("http://{h2_listen}/h2/upload"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    let mut stdin = upload.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, &[b'x'; 5000]).expect("write the upload");
    drop(stdin);
    assert!(upload.wait().expect("curl").success());
    let uploaded = wait_for("the upload's line", WAIT, || {
        lines_for(&proxy, "/h2/upload").pop()
    });
    assert_eq!(uploaded["method"], "PUT", "{uploaded}");
    assert_eq!(uploaded["bytes_received"], 5000, "{uploaded}");

    // Failures carry Envoy's flags: an injected fault, an endpoint nobody listens on.
    assert_eq!(curl_many(listen, "/fault", 1, &[]), [503]);
    let fault = wait_for("the fault's line", WAIT, || {
        lines_for(&proxy, "/fault").pop()
    });
    assert_eq!(fault["response_flags"], "FI", "{fault}");
    assert_eq!(fault["route_name"], "shop/web-faults", "{fault}");
    assert_eq!(fault["upstream_host"], Value::Null, "{fault}");
    let output = run(Command::new(which("curl"))
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://{h2_listen}/nomatch")));
    assert_eq!(output.stdout, b"404");
    let nomatch = wait_for("the unmatched request's line", WAIT, || {
        lines_for(&proxy, "/nomatch").pop()
    });
    assert_eq!(nomatch["response_flags"], "NR", "{nomatch}");
    assert_eq!(nomatch["upstream_cluster"], "shop/web2", "{nomatch}");
    let dead_line = mark(&proxy, dead_listen, "dead");
    assert_eq!(dead_line["response_flags"], "UF", "{dead_line}");
    assert_eq!(dead_line["upstream_cluster"], "shop/dead", "{dead_line}");
    assert_eq!(dead_line["response_code"], 502, "{dead_line}");

    // Opaque TCP: one line at the connection's close.
    assert_eq!(curl_many(db_listen, "/tcp", 1, &[]), [200]);
    let tcp = wait_for("the TCP connection's line", WAIT, || {
        lines(&proxy).into_iter().find(|l| l["protocol"] == "tcp")
    });
    assert_eq!(tcp["upstream_cluster"], "shop/db", "{tcp}");
    assert_eq!(tcp["upstream_host"], web.to_string(), "{tcp}");
    assert!(tcp["bytes_received"].as_u64() > Some(20), "{tcp}");
    assert!(tcp["bytes_sent"].as_u64() > Some(20), "{tcp}");

    // A 10% share: about 10% of the requests, within 4.5 binomial deviations.
    let tenth = "  telemetry: {accessLog: {samplingPercent: 10}}";
    apply(&cp, &proxy, &mesh(apps, tenth, all));
    let n = 3_000;
    assert!(curl_many(listen, "/sampled", n, &[])
        .iter()
        .all(|s| *s == 200));
    mark(&proxy, dead_listen, "sampled");
    let logged = lines_for(&proxy, "/sampled").len();
    let expected = n as f64 * 0.1;
    let deviation = (n as f64 * 0.1 * 0.9).sqrt();
    eprintln!("10% of {n}: {logged} lines (expected {expected}, sd {deviation:.1})");
    assert!(
        (logged as f64 - expected).abs() <= 4.5 * deviation,
        "{logged} lines of {n} at 10%"
    );

    // Off again: no more lines, same process.
    apply(&cp, &proxy, &mesh(apps, "", all));
    assert!(curl_many(listen, "/after", 200, &[])
        .iter()
        .all(|s| *s == 200));
    mark(&proxy, dead_listen, "after");
    assert!(lines_for(&proxy, "/after").is_empty(), "logged after off");
    assert!(proxy.proc.is_running(), "the proxy exited");
    assert_eq!(proxy.proc.pid(), pid, "the proxy was restarted");

    let metrics = proxy.metrics();
    assert!(
        metrics.contains("weft_access_log_lines_dropped_total 0"),
        "{metrics}"
    );
    promtool_check(&metrics);
}

/// The server-side proxy logs its inbound requests by its own service's setting,
/// and gRPC calls carry their status (from the trailers, or a trailers-only answer).
#[test]
fn inbound_and_grpc_requests_are_logged_by_their_services() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = grpc::script(dir.path());
    let echo = grpc::app(&script, "echo");
    let slow = App::start(dir.path(), "slow", &["--delay-ms", "5000"]);
    let cp = ControlPlane::start(dir.path(), &dir.path().join("data"), free_port(), &[]);
    let config = "kind: Service
metadata: {name: api, namespace: shop}
spec:
  ports: [{port: 80, protocol: http1}]
  telemetry: {accessLog: {samplingPercent: 100}}
---
"
    .to_owned()
        + &shop_service(
            "echo",
            "grpc",
            echo.addr,
            "  telemetry: {accessLog: {samplingPercent: 100}}",
        )
        + &shop_service("slow", "http2", slow.addr, "  telemetry: {accessLog: {}}");
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(&config));
    let pod = Pod::start(dir.path(), &cp.address(), "shop/api", "api", &[], &[]);
    let (api_listen, echo_listen, slow_listen) = (
        loopback(free_port()),
        loopback(free_port()),
        loopback(free_port()),
    );
    let upstreams = [
        format!("shop/api={api_listen}"),
        format!("shop/echo={echo_listen}"),
        format!("shop/slow={slow_listen}"),
    ];
    let flags = [
        "--upstream",
        &upstreams[0],
        "--upstream",
        &upstreams[1],
        "--upstream",
        &upstreams[2],
    ];
    let client = Proxy::start(dir.path(), "client", &cp.address(), &flags);
    client.wait_ready();

    wait_for("the api pod to answer through the mesh", WAIT, || {
        (answers(api_listen, "/in") == 200).then_some(())
    });
    let inbound = wait_for("the pod's inbound line", WAIT, || {
        lines_for(&pod.proxy, "/in").pop()
    });
    assert_eq!(inbound["direction"], "inbound", "{inbound}");
    assert_eq!(inbound["upstream_cluster"], "shop/api", "{inbound}");
    assert_eq!(
        inbound["upstream_host"],
        pod.app.addr.to_string(),
        "{inbound}"
    );
    assert_eq!(inbound["response_code"], 200, "{inbound}");
    assert_eq!(inbound["response_flags"], "-", "{inbound}");
    let outbound = wait_for("the client's line", WAIT, || {
        lines_for(&client, "/in").pop()
    });
    assert_eq!(outbound["direction"], "outbound", "{outbound}");
    assert_eq!(outbound["upstream_host"], pod.endpoint(), "{outbound}");

    let target = echo_listen.to_string();
    let ok = grpc::client(&script, &["served", &target, "/weft.test.Echo/Unary"]);
    assert_eq!(ok["code"], "OK", "{ok}");
    let missing = grpc::client(&script, &["served", &target, "/weft.test.Echo/Missing"]);
    assert_eq!(missing["code"], "UNIMPLEMENTED", "{missing}");
    let unary = wait_for("the unary call's line", WAIT, || {
        lines_for(&client, "/weft.test.Echo/Unary").pop()
    });
    assert_eq!(unary["protocol"], "HTTP/2", "{unary}");
    assert_eq!(unary["method"], "POST", "{unary}");
    assert_eq!(unary["grpc_status"], 0, "{unary}");
    assert_eq!(unary["response_flags"], "-", "{unary}");
    assert_eq!(unary["upstream_cluster"], "shop/echo", "{unary}");
    assert!(unary["bytes_sent"].as_u64() > Some(0), "{unary}");
    assert!(unary["bytes_received"].as_u64() > Some(0), "{unary}");
    let missing = wait_for("the missing method's line", WAIT, || {
        lines_for(&client, "/weft.test.Echo/Missing").pop()
    });
    assert_eq!(missing["grpc_status"], 12, "{missing}");

    // A client that gives up before the response began: logged with DC, no status.
    let output = run(Command::new(which("curl"))
        .args(["-s", "--http2-prior-knowledge", "--max-time", "0.5"])
        .arg(format!("http://{slow_listen}/slow")));
    assert!(
        !output.status.success(),
        "the slow app answered within 0.5 s"
    );
    let abandoned = wait_for("the abandoned request's line", WAIT, || {
        lines_for(&client, "/slow").pop()
    });
    assert_eq!(abandoned["response_flags"], "DC", "{abandoned}");
    assert_eq!(abandoned["response_code"], 0, "{abandoned}");
    assert_eq!(abandoned["upstream_cluster"], "shop/slow", "{abandoned}");
}
