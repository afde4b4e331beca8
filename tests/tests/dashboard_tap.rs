//! The dashboard's live tap end to end: `weftctl dashboard` over two real proxies
//! (the client and the server of shop/orders, mTLS), its `/api/tap` read as the
//! page reads it (server-sent events): both proxies' requests with their fields,
//! the path filter applied, one proxy's own stream, and a closed stream that frees
//! the proxy's tap, so that a page opened more often than a proxy has tap slots
//! still streams.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use weft_e2e::mesh::{
    http_app, orders_and_frontend, weftctl_ok, ControlPlane, ORDERS_STRICT as MESH,
};
use weft_e2e::{bin, free_port, http_get, loopback, wait_for, Proc};

const WAIT: Duration = Duration::from_secs(20);

/// `GET {path}` as HTTP/1.0, so that the event stream comes unchunked, read to
/// the end of the answer's head.
fn open(address: SocketAddr, path: &str) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(address).expect("connect to the dashboard");
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("read timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").expect("write");
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        let read = reader.read_line(&mut head).expect("read the head");
        assert!(read > 0, "no answer: {head:?}");
    }
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    reader
}

/// The next event: its name (empty for a plain message) and its data, parsed;
/// `None` when none came within the read timeout.
fn next_event(stream: &mut BufReader<TcpStream>) -> Option<(String, Value)> {
    let (mut name, mut data) = (String::new(), String::new());
    loop {
        let mut line = String::new();
        match stream.read_line(&mut line) {
            Ok(0) => panic!("the stream ended"),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(e) => panic!("read an event: {e}"),
        }
        let line = line.trim_end_matches('\n');
        if line.is_empty() && !data.is_empty() {
            let data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"));
            return Some((name, data));
        }
        if let Some(value) = line.strip_prefix("event: ") {
            name = value.to_owned();
        } else if let Some(value) = line.strip_prefix("data: ") {
            data.push_str(value);
        }
    }
}

/// The next event, sending `traffic` until it comes: a tap starts a moment after
/// its stream opens, and requests before that are not in it.
fn event_after(stream: &mut BufReader<TcpStream>, mut traffic: impl FnMut()) -> (String, Value) {
    wait_for("an event", WAIT, || {
        traffic();
        next_event(stream)
    })
}

#[test]
fn the_dashboard_streams_the_proxies_taps_and_frees_them_when_the_page_leaves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let cp = ControlPlane::start(path, &path.join("data"), free_port(), &[]);
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(MESH));
    let (app, _) = http_app("orders-app");
    let (server, client, listen) = orders_and_frontend(&cp, path, app);
    let (client_admin, server_admin) = (client.admin.to_string(), server.admin.to_string());
    let address = loopback(free_port());
    let mut command = Command::new(bin("weftctl"));
    command.args(["dashboard", "--listen", &address.to_string()]);
    command.args(["--interval", "500ms"]);
    command.args(["--proxy", &client_admin, "--proxy", &server_admin]);
    let mut dashboard = Proc::spawn("dashboard", &mut command, path);
    wait_for("the dashboard to see both proxies up", WAIT, || {
        assert!(dashboard.is_running(), "{}", dashboard.log_text());
        let (status, state) = http_get(address, "/api/state").ok()?;
        (status == 200 && state.matches("\"state\":\"up\"").count() == 2).then_some(())
    });

    // Both proxies, the page's path filter applied by them: /other never shows.
    let mut stream = open(address, "/api/tap?path=%2Fdash");
    let (name, opened) = next_event(&mut stream).expect("the open event");
    assert_eq!(name, "open");
    let mut both = [client_admin.clone(), server_admin.clone()];
    both.sort();
    assert_eq!(opened["proxies"], serde_json::json!(both));
    let mut directions = BTreeSet::new();
    for n in 0..20 {
        let (name, data) = event_after(&mut stream, || {
            assert!(matches!(http_get(listen, "/other"), Ok((200, _))));
            assert!(matches!(
                http_get(listen, &format!("/dash/{n}")),
                Ok((200, _))
            ));
        });
        assert_eq!(name, "", "{data}");
        let (proxy, event) = (&data["proxy"], &data["event"]);
        let expected = match event["direction"].as_str() {
            Some("outbound") => &client_admin,
            _ => &server_admin,
        };
        assert_eq!(proxy, expected.as_str(), "{data}");
        assert_eq!(event["method"], "GET", "{data}");
        assert!(
            event["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/dash/")),
            "{data}"
        );
        assert_eq!(event["status"], 200, "{data}");
        assert_eq!(event["service"], "shop/orders", "{data}");
        assert_eq!(event["tls"], true, "{data}");
        assert!(event["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0));
        directions.insert(event["direction"].as_str().unwrap_or("").to_owned());
        if directions.len() == 2 {
            break;
        }
    }
    assert_eq!(directions.len(), 2, "{directions:?}");
    drop(stream);

    // A page that leaves closes its stream, and the dashboard then stops tapping:
    // more streams one after another than the proxy has tap slots all stream.
    for n in 0..weft_proxy::tap::MAX_TAPS + 2 {
        wait_for("a stream of the client proxy's requests", WAIT, || {
            let mut stream = open(address, &format!("/api/tap?proxy={client_admin}"));
            let (name, opened) = next_event(&mut stream).expect("the open event");
            assert_eq!(name, "open");
            assert_eq!(opened["proxies"], serde_json::json!([client_admin]));
            // Slots still held by streams closed a moment ago answer 429 until
            // the proxy notices (at its next write): that stream ends, and the
            // next try opens another.
            let (name, data) = event_after(&mut stream, || {
                assert!(matches!(
                    http_get(listen, &format!("/again/{n}")),
                    Ok((200, _))
                ));
            });
            (name.is_empty() && data["event"]["path"] == format!("/again/{n}")).then_some(())
        });
    }
    // Only a proxy the dashboard lists can be tapped through it.
    let mut stream = open(address, "/api/tap?proxy=192.0.2.1%3A80");
    let opened = next_event(&mut stream).expect("the open event");
    assert_eq!(
        opened,
        ("open".to_owned(), serde_json::json!({"proxies": []}))
    );
    assert_eq!(next_event(&mut stream).expect("done").0, "done");
}
