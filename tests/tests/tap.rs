//! `weftctl tap` and the proxies' `/tap` end to end: a client proxy and a server
//! proxy (mTLS, STRICT) in front of an app, a route choosing the service, requests
//! sent with curl, and the events read with `weftctl tap` and with a raw HTTP
//! client: their fields, the path and method filters, the rate cap and its drop
//! counter, the bound on concurrent taps, and who may tap.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use weft_e2e::mesh::{identified_proxy, resource, weftctl_ok, App, ControlPlane};
use weft_e2e::netns::{self, within, Netns};
use weft_e2e::{bin, free_port, loopback, metric_sum, wait_for, Proc};

const WAIT: Duration = Duration::from_secs(20);
const CLIENT: &str = "spiffe://cluster.local/ns/default/sa/client";
const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";

const MESH: &str = r#"
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{port: 80, protocol: http1}]
  mtls: STRICT
---
kind: HTTPRoute
metadata: {name: web-routes, namespace: default}
spec:
  parentRefs: [{name: web, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: web, port: 80}]
"#;

/// One request through the client proxy with curl: the status it got.
fn curl(method: &str, listen: SocketAddr, path: &str) -> u16 {
    let output = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method])
        .arg(format!("http://{listen}{path}"))
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&output.stdout).parse().unwrap_or(0)
}

/// `weftctl tap` with `args`, its stdout piped.
fn weftctl_tap(args: &[&str]) -> Child {
    Command::new(bin("weftctl"))
        .arg("tap")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weftctl tap")
}

/// Sends `traffic` until `tap` exits (it stops after its `--count`), then returns
/// its lines.
fn tap_while(mut tap: Child, mut traffic: impl FnMut()) -> Vec<String> {
    wait_for("weftctl tap to print its events", WAIT, || {
        traffic();
        tap.try_wait().expect("weftctl tap status")
    });
    let output = tap.wait_with_output().expect("weftctl tap output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "weftctl tap failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().map(str::to_owned).collect()
}

fn events(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// A raw `GET {path}` with optional headers; the connection, positioned after
/// the answer's head, and its status.
fn open(admin: SocketAddr, path: &str, headers: &str) -> (BufReader<TcpStream>, u16) {
    let stream = TcpStream::connect(admin).expect("connect to the admin port");
    open_on(stream, admin, path, headers)
}

/// [`open`] from inside the network namespace `netns`: the connection's source is
/// that namespace's address toward `admin`.
fn open_from(
    netns: &Netns,
    admin: SocketAddr,
    path: &str,
    headers: &str,
) -> (BufReader<TcpStream>, u16) {
    let stream = within(netns.name(), || TcpStream::connect(admin))
        .expect("enter the namespace")
        .expect("connect to the admin port");
    open_on(stream, admin, path, headers)
}

fn open_on(
    mut stream: TcpStream,
    admin: SocketAddr,
    path: &str,
    headers: &str,
) -> (BufReader<TcpStream>, u16) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {admin}\r\n{headers}\r\n"
    )
    .expect("write");
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read the head");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    (
        reader,
        status.unwrap_or_else(|| panic!("a status line: {head:?}")),
    )
}

#[test]
fn tap_streams_finished_requests_filtered_rate_capped_and_authorized() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let cp = ControlPlane::start(path, &path.join("data"), free_port(), &[]);
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(MESH));
    let app = App::start(path, "web-a", &[]);
    let server = identified_proxy(
        &cp,
        path,
        "web-proxy",
        ("default", "web"),
        Some(("web", app.addr)),
        &[],
    );
    let listen = loopback(free_port());
    let upstream = format!("default/web={listen}");
    let client = identified_proxy(
        &cp,
        path,
        "client",
        ("default", "client"),
        None,
        &["--upstream", &upstream],
    );
    server.wait_ready();
    client.wait_ready();
    wait_for("the client to see web's identity and route", WAIT, || {
        let dump = client.config_dump();
        let endpoints = resource(&dump, "endpoints", "default/web")?;
        let endpoint = endpoints["endpoints"].as_array()?.first()?.clone();
        let routed = !dump["resources"]["http_routes"].as_array()?.is_empty();
        (endpoint["identity"] == WEB && routed).then_some(())
    });
    assert_eq!(curl("GET", listen, "/tap-me/warm"), 200);

    // The client proxy's events: outbound, its own identity, the route, the
    // endpoint dialled with mTLS. Only GET under /tap-me: /other and POST are not
    // shown.
    let client_admin = client.admin.to_string();
    let tap = weftctl_tap(&[
        "--proxy",
        &client_admin,
        "-o",
        "json",
        "--count",
        "3",
        "--path",
        "/tap-me",
        "--method",
        "GET",
    ]);
    let lines = tap_while(tap, || {
        assert_eq!(curl("GET", listen, "/other"), 200);
        assert_eq!(curl("POST", listen, "/tap-me/posted"), 200);
        assert_eq!(curl("GET", listen, "/tap-me/a?q=1"), 200);
    });
    eprintln!("weftctl tap --proxy client -o json:\n{}", lines.join("\n"));
    let outbound = events(&lines);
    assert_eq!(outbound.len(), 3, "{lines:?}");
    for event in &outbound {
        assert_eq!(event["direction"], "outbound", "{event}");
        assert_eq!(event["method"], "GET", "{event}");
        assert_eq!(event["path"], "/tap-me/a", "{event}");
        assert_eq!(event["status"], 200, "{event}");
        assert_eq!(event["service"], "default/web", "{event}");
        assert_eq!(event["route"], "default/web-routes", "{event}");
        assert_eq!(event["endpoint"], server.inbound.to_string(), "{event}");
        assert_eq!(event["source"], CLIENT, "{event}");
        assert_eq!(event["tls"], true, "{event}");
        assert_eq!(event["retries"], 0, "{event}");
        assert_eq!(event["authority"], listen.to_string(), "{event}");
        assert!(
            event["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0),
            "{event}"
        );
        assert!(
            event["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{event}"
        );
    }

    // The server proxy's: inbound, the caller's identity from its certificate.
    let server_admin = server.admin.to_string();
    let tap = weftctl_tap(&["--proxy", &server_admin, "-o", "json", "--count", "2"]);
    let lines = tap_while(tap, || {
        assert_eq!(curl("GET", listen, "/tap-me/b"), 200);
    });
    for event in events(&lines) {
        assert_eq!(event["direction"], "inbound", "{event}");
        assert_eq!(event["source"], CLIENT, "{event}");
        assert_eq!(event["tls"], true, "{event}");
        assert_eq!(event["service"], "default/web", "{event}");
        assert_eq!(event["path"], "/tap-me/b", "{event}");
        assert_eq!(event["status"], 200, "{event}");
    }

    // Found through the control plane: --service picks the web workload's proxy.
    let tap = weftctl_tap(&[
        "--control-plane",
        &cp.address(),
        "--service",
        "default/web",
        "-o",
        "json",
        "--count",
        "1",
    ]);
    let lines = tap_while(tap, || {
        assert_eq!(curl("GET", listen, "/listed"), 200);
    });
    let listed = events(&lines);
    assert_eq!(listed[0]["direction"], "inbound", "{lines:?}");
    assert_eq!(listed[0]["path"], "/listed", "{lines:?}");

    // Both at once, as text: a request shows once per proxy it crossed.
    let tap = weftctl_tap(&[
        "--proxy",
        &client_admin,
        "--proxy",
        &server_admin,
        "--count",
        "4",
        "--path",
        "/both",
    ]);
    let lines = tap_while(tap, || {
        assert_eq!(curl("GET", listen, "/both"), 200);
    });
    eprintln!("weftctl tap (text):\n{}", lines.join("\n"));
    assert_eq!(lines.len(), 4, "{lines:?}");
    for line in &lines {
        assert!(
            line.contains(" GET ") && line.contains("/both -> 200 "),
            "{line}"
        );
        assert!(
            line.contains("service=default/web") && line.contains(&format!("src={CLIENT}")),
            "{line}"
        );
    }

    // The rate cap: a tap at max_rps=1 gets a burst's first event or two; the rest
    // are dropped and counted.
    let dropped = || {
        metric_sum(
            &client.metrics(),
            "weft_tap_events_dropped_total",
            &["reason=\"rate\""],
        )
    };
    let before = dropped();
    let (mut capped, status) = open(client.admin, "/tap?max_rps=1&path=/burst", "");
    assert_eq!(status, 200);
    let burst = std::time::Instant::now();
    for _ in 0..50 {
        let (status, _) = weft_e2e::http_get(listen, "/burst").expect("a burst request");
        assert_eq!(status, 200);
    }
    let seconds = burst.elapsed().as_secs_f64();
    // The bucket starts with one token and gains one a second.
    let most = 1 + seconds.ceil() as usize;
    capped.get_ref().set_nonblocking(true).expect("nonblocking");
    let mut delivered = Vec::new();
    let events = wait_for("every request delivered or dropped", WAIT, || {
        // Stops at WouldBlock, keeping what it read.
        let _ = capped.read_to_end(&mut delivered);
        let events = String::from_utf8_lossy(&delivered)
            .matches("\"path\":\"/burst\"")
            .count();
        (events as f64 + dropped() - before >= 50.0).then_some(events)
    });
    eprintln!(
        "max_rps=1: {events} events in {seconds:.2} s, {} dropped",
        dropped() - before
    );
    assert!(
        (1..=most).contains(&events),
        "{}",
        String::from_utf8_lossy(&delivered)
    );
    assert!(dropped() - before >= (50 - most) as f64);
}

#[test]
fn only_loopback_or_the_token_may_tap_and_taps_are_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    // The proxy in a namespace of its own, and a peer namespace joined to it by a
    // veth pair: the peer's connections come from a non-loopback address, as a
    // other pod's would.
    let node = Netns::new("tap-node");
    let peer = Netns::new("tap-peer");
    netns::connect(&node, "10.231.0.1/24", &peer, "10.231.0.2/24", "veth-tap");
    let port = free_port();
    let mut command = node.command(bin("weft-proxy"));
    command.args([
        "--control-plane",
        "127.0.0.1:1",
        "--node-id",
        "tapped",
        "--tap-token",
        "s3cret",
        "--admin",
        &format!("0.0.0.0:{port}"),
        "--inbound",
        &loopback(free_port()).to_string(),
        "--outbound",
        &loopback(free_port()).to_string(),
    ]);
    let mut proxy = Proc::spawn("tapped", &mut command, path);
    let admin_loopback = loopback(port);
    let admin_outside: SocketAddr = format!("10.231.0.1:{port}").parse().expect("address");
    wait_for("the admin port", WAIT, || {
        assert!(proxy.is_running(), "{}", proxy.log_text());
        within(node.name(), || weft_e2e::http_get(admin_loopback, "/live"))
            .expect("enter the namespace")
            .ok()
            .filter(|(s, _)| *s == 200)
    });

    // Off loopback: the token, and only the token, opens the tap.
    let (_, status) = open_from(&peer, admin_outside, "/tap", "");
    assert_eq!(status, 403);
    let (_, status) = open_from(
        &peer,
        admin_outside,
        "/tap",
        "Authorization: Bearer wrong\r\n",
    );
    assert_eq!(status, 403);
    let (_, status) = open_from(&peer, admin_outside, "/tap", "Authorization: s3cret\r\n");
    assert_eq!(status, 403);
    let bearer = "Authorization: Bearer s3cret\r\n";
    let (with_token, status) = open_from(&peer, admin_outside, "/tap", bearer);
    assert_eq!(status, 200);
    // weftctl without the token is refused too.
    let refused = peer
        .command(bin("weftctl"))
        .args(["tap", "--proxy", &admin_outside.to_string(), "--count", "1"])
        .output()
        .expect("weftctl tap");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("403"),
        "{refused:?}"
    );
    // Other admin pages are not guarded by it.
    let live = within(peer.name(), || weft_e2e::http_get(admin_outside, "/live"))
        .expect("enter the namespace")
        .expect("live");
    assert_eq!(live.0, 200);
    // A bad query is refused before anything is subscribed.
    assert_eq!(open_from(&node, admin_loopback, "/tap?sample=2", "").1, 400);

    // On loopback no token is needed; eight taps at once, not nine.
    let mut taps = vec![with_token];
    while taps.len() < weft_proxy::tap::MAX_TAPS {
        let (tap, status) = open_from(&node, admin_loopback, "/tap", "");
        assert_eq!(status, 200);
        taps.push(tap);
    }
    assert_eq!(open_from(&node, admin_loopback, "/tap", "").1, 429);
    drop(taps);
    // A tap whose client went away frees its slot (at the latest when a write
    // fails: an idle tap writes an empty line every few seconds).
    wait_for("a slot to free up", WAIT, || {
        let (tap, status) = open_from(&node, admin_loopback, "/tap", "");
        (status == 200).then_some(tap)
    });
}
