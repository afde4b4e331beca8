//! `weftctl top` end to end: a service `default/web` (STRICT mTLS) with two
//! endpoints, one answering half its requests with 503, a service `default/plain`
//! whose proxy has no identity (so it is reached in plaintext), steady load on both
//! through a client proxy, and the live view read from the real proxies'
//! `/metrics`, found through the control plane or named with `--proxy`.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use weft_e2e::load::{Load, Options};
use weft_e2e::mesh::{
    identified_proxy, resource, weftctl, weftctl_ok, App, ControlPlane, Pod, Proxy,
};
use weft_e2e::{bin, free_port, loopback, wait_for, Proc};

const WAIT: Duration = Duration::from_secs(20);
const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";

// Round robin, so both endpoints always get traffic (P2C over two endpoints may
// send everything to the faster one for a while).
const MESH: &str = r#"
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{port: 80, protocol: http1}]
  mtls: STRICT
  loadBalancer: round_robin
---
kind: Service
metadata: {name: plain, namespace: default}
spec: {ports: [{port: 80, protocol: http1}]}
"#;

fn row(frame: &Value, service: &str) -> Option<Value> {
    frame["services"]
        .as_array()?
        .iter()
        .find(|s| s["service"] == service)
        .cloned()
}

/// The `default/web` row of one `weftctl top --once -o json` frame, when the
/// frame's numbers are those of the load: both endpoints, traffic, some but not
/// all of it failed (one endpoint fails half), all of it over mTLS; and
/// `default/plain` with its endpoint, traffic, none of it failed or over mTLS.
fn web_row(frame: &Value) -> Option<Value> {
    let web = row(frame, "default/web")?;
    let success = web["success"].as_f64()?;
    let web_ready = web["endpoints"] == 2
        && web["rps"].as_f64()? > 0.0
        && success > 0.0
        && success < 1.0
        && web["tls"].as_f64()? == 1.0;
    let plain = row(frame, "default/plain")?;
    let plain_ready = plain["endpoints"] == 1
        && plain["rps"].as_f64()? > 0.0
        && plain["success"].as_f64()? == 1.0
        && plain["tls"].as_f64()? == 0.0;
    (web_ready && plain_ready).then_some(web)
}

/// Runs `weftctl top --once -o json` with `args` until a frame shows the load.
fn top_json(control_plane: &str, args: &[&str]) -> (Value, Value) {
    let mut all = vec!["top", "--once", "-o", "json", "--interval", "500ms"];
    // Debug builds on a busy machine can be slow to render /metrics.
    all.extend_from_slice(&["--timeout", "5s"]);
    all.extend_from_slice(args);
    wait_for("weftctl top to show default/web under load", WAIT, || {
        let stdout = weftctl_ok(control_plane, &all, None);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "one frame, one line: {stdout}");
        let frame: Value = serde_json::from_str(lines[0]).expect("a frame is JSON");
        let row = web_row(&frame)?;
        Some((frame, row))
    })
}

fn assert_latency(row: &Value) {
    let p50 = row["p50_ms"].as_f64().expect("p50 with traffic");
    let p99 = row["p99_ms"].as_f64().expect("p99 with traffic");
    assert!(p50 > 0.0 && p50 <= p99, "{row}");
}

#[test]
fn top_shows_a_services_golden_metrics_from_its_proxies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let cp = ControlPlane::start(path, &path.join("data"), free_port(), &[]);
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(MESH));

    let healthy = App::start(path, "web-a", &[]);
    let flaky = App::start(path, "web-b", &["--fail-ratio", "0.5"]);
    let server = |node: &str, app: &App| {
        identified_proxy(
            &cp,
            path,
            node,
            ("default", "web"),
            Some(("web", app.addr)),
            &[],
        )
    };
    let web_a = server("web-a-proxy", &healthy);
    let web_b = server("web-b-proxy", &flaky);
    // No identity token: its proxy accepts (and counts) plaintext only.
    let plain = Pod::start(path, &cp.address(), "default/plain", "plain", &[], &[]);
    let listen = loopback(free_port());
    let plain_listen = loopback(free_port());
    let upstream = format!("default/web={listen}");
    let plain_upstream = format!("default/plain={plain_listen}");
    let client = identified_proxy(
        &cp,
        path,
        "client",
        ("default", "client"),
        None,
        &["--upstream", &upstream, "--upstream", &plain_upstream],
    );
    let proxies: [&Proxy; 4] = [&web_a, &web_b, &plain.proxy, &client];
    for proxy in proxies {
        proxy.wait_ready();
    }
    // Both endpoints carry the servers' identity: the client dials them with mTLS.
    wait_for(
        "the client to see both endpoints with identities",
        WAIT,
        || {
            let endpoints = resource(&client.config_dump(), "endpoints", "default/web")?;
            let endpoints = endpoints["endpoints"].as_array()?.clone();
            (endpoints.len() == 2 && endpoints.iter().all(|e| e["identity"] == WEB)).then_some(())
        },
    );

    // Every proxy announced where its admin endpoint is.
    let status: Value =
        serde_json::from_str(&weftctl_ok(&cp.address(), &["status", "-o", "json"], None))
            .expect("status is JSON");
    for proxy in proxies {
        let listed = status
            .as_array()
            .expect("a list of proxies")
            .iter()
            .find(|p| p["id"] == proxy.node_id.as_str())
            .unwrap_or_else(|| panic!("{} in {status}", proxy.node_id));
        assert_eq!(listed["adminAddress"], proxy.admin.to_string(), "{listed}");
    }

    let load = Load::start(
        listen,
        Options {
            rate: 100,
            connections: 2,
            ..Options::default()
        },
    );
    let plain_load = Load::start(
        plain_listen,
        Options {
            rate: 20,
            connections: 1,
            ..Options::default()
        },
    );
    load.wait_for_successes(20, WAIT);
    plain_load.wait_for_successes(5, WAIT);

    // Targets from the control plane.
    let (frame, row) = top_json(&cp.address(), &[]);
    eprintln!("weftctl top -o json:\n{frame}");
    assert_latency(&row);
    assert_eq!(frame["unreachable"], serde_json::json!([]), "{frame}");

    // Targets named, one of them down; the control plane is not used.
    let down = loopback(free_port()).to_string();
    let nowhere = loopback(free_port()).to_string();
    let mut args = vec!["--proxy", down.as_str()];
    let admins: Vec<String> = proxies.iter().map(|p| p.admin.to_string()).collect();
    for admin in &admins {
        args.extend(["--proxy", admin.as_str()]);
    }
    let (frame, row) = top_json(&nowhere, &args);
    assert_latency(&row);
    assert_eq!(frame["unreachable"][0]["target"], down.as_str(), "{frame}");

    // The table: a time line, the header, the service's row.
    let table = weftctl_ok(
        &cp.address(),
        &["stat", "--once", "--interval", "500ms", "--timeout", "5s"],
        None,
    );
    eprintln!("weftctl top:\n{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].ends_with('Z'), "a time first: {table}");
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "SERVICE",
            "ENDPOINTS",
            "RPS",
            "SUCCESS",
            "P50",
            "P99",
            "TLS"
        ]
    );
    let web: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with("default/web "))
        .unwrap_or_else(|| panic!("a default/web row: {table}"))
        .split_whitespace()
        .collect();
    assert_eq!(web[1], "2", "{table}");

    // --count frames, one line each; Ctrl-C ends a run without a count, exit 0.
    let counted = weftctl_ok(
        &nowhere,
        &[
            "top",
            "--count",
            "2",
            "--interval",
            "100ms",
            "-o",
            "json",
            "--proxy",
            &down,
        ],
        None,
    );
    assert_eq!(counted.lines().count(), 2, "{counted}");
    let mut endless = Proc::spawn(
        "weftctl-top",
        Command::new(bin("weftctl")).args(["top", "--interval", "100ms", "--proxy", &down]),
        path,
    );
    wait_for("the first frame", WAIT, || {
        endless.log_text().contains("SERVICE").then_some(())
    });
    endless.signal("INT");
    assert_eq!(endless.wait_exit(WAIT), Some(0), "{}", endless.log_text());

    // Bad input is a clear error, not a panic.
    let bad = weftctl(&cp.address(), &["top", "--once", "--proxy", "web-a"], None);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("is not host:port"), "{stderr}");

    for load in [load, plain_load] {
        let report = load.stop();
        assert!(report.succeeded() > 0, "{}", report.summary());
    }
}
