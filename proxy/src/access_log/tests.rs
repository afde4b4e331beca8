use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Request;

use super::line::Flags;
use super::{Writer, QUEUE};
use crate::dataplane::error::Class;
use crate::metrics::{Direction, ServiceMetrics};
use crate::record::{Attempted, Readers, Record};

/// What the record test's writer wrote.
static WRITTEN: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        WRITTEN.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Holds the drop test's writer in its first write until the test lets go.
static GATE: Mutex<()> = Mutex::new(());

struct Gated;

impl Write for Gated {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _open = GATE.lock().unwrap_or_else(|e| e.into_inner());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn flags_name_the_failure_as_envoy_does() {
    let cases = [
        (Class::NoRoute, "NR"),
        (Class::NoBackend, "NC"),
        (Class::NoEndpoint, "UH"),
        (Class::Connect, "UF"),
        (Class::ConnectTimeout, "UF"),
        (Class::Upstream, "UC"),
        (Class::Overflow, "UO"),
        (Class::Timeout, "UT"),
        (Class::Client, "DPE"),
        (Class::BodyTimeout, "SI"),
        (Class::Denied, "-"),
        (Class::Unsupported, "-"),
    ];
    assert_eq!(cases.len(), Class::ALL.len(), "every class has a case");
    for (class, flags) in cases {
        assert_eq!(Flags::of(class).render(), flags, "{class:?}");
    }
    assert_eq!(
        Flags::of_filter_answer(b"fault filter abort").render(),
        "FI"
    );
    assert_eq!(
        Flags::of_filter_answer(b"local rate limit exceeded").render(),
        "RL"
    );
    assert_eq!(Flags::of_filter_answer(b"redirect").render(), "-");

    let mut flags = Flags::URX;
    flags.insert(Flags::UF);
    flags.insert(Flags::UF);
    assert_eq!(flags.render(), "UF,URX", "in Envoy's order, once each");
}

#[test]
fn a_finished_request_writes_one_line_with_istio_field_names() {
    let writer = Arc::new(Writer::with_sink(true, || Box::new(Capture)));
    let request = Request::builder()
        .method("POST")
        .uri("http://web.shop:8080/cart/items?id=7")
        .header("user-agent", "curl/8.14")
        .header("x-request-id", "abc-123")
        .header("x-forwarded-for", "10.0.0.9")
        .header("content-length", "5")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"hello",
        )))
        .expect("request");
    let metrics = ServiceMetrics::new(Direction::Outbound, "shop/web".to_owned());
    let remote: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let local: SocketAddr = "127.0.0.1:15001".parse().expect("addr");
    let readers = Readers {
        tap: None,
        log: Some(writer.clone()),
        downstream: Some((remote, local)),
    };
    let own = Some("spiffe://weft.local/ns/shop/sa/frontend".to_owned());
    let started = Instant::now() - Duration::from_millis(30);
    let mut record = Record::new(readers, &request, &metrics, None, own, started);
    record.attempted(Attempted {
        endpoint: "10.1.2.3:8080".parse().expect("addr"),
        identity: Some("spiffe://weft.local/ns/shop/sa/web".to_owned()),
        retries: 1,
        answered_after: Duration::from_millis(20),
    });
    record.flag(Flags::URX);
    record.sent(12);
    record.finish(503, None);

    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let written = WRITTEN.lock().expect("lock").clone();
        if written.ends_with(b"\n") {
            break written;
        }
        assert!(Instant::now() < deadline, "no line written");
        std::thread::sleep(Duration::from_millis(5));
    };
    let text = String::from_utf8(line).expect("utf-8");
    assert_eq!(text.lines().count(), 1, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    let field = |name: &str| json[name].clone();
    assert_eq!(field("method"), "POST");
    assert_eq!(field("path"), "/cart/items?id=7");
    assert_eq!(field("protocol"), "HTTP/1.1");
    assert_eq!(field("response_code"), 503);
    assert_eq!(field("response_flags"), "URX");
    assert_eq!(field("bytes_received"), 5);
    assert_eq!(field("bytes_sent"), 12);
    assert!(field("duration").as_u64().expect("ms") >= 30);
    assert_eq!(field("upstream_service_time"), 20);
    assert_eq!(field("x_forwarded_for"), "10.0.0.9");
    assert_eq!(field("user_agent"), "curl/8.14");
    assert_eq!(field("request_id"), "abc-123");
    assert_eq!(field("authority"), "web.shop:8080");
    assert_eq!(field("upstream_host"), "10.1.2.3:8080");
    assert_eq!(field("upstream_cluster"), "shop/web");
    assert_eq!(field("route_name"), serde_json::Value::Null);
    assert_eq!(field("downstream_remote_address"), "127.0.0.1:40000");
    assert_eq!(field("downstream_local_address"), "127.0.0.1:15001");
    assert_eq!(field("direction"), "outbound");
    assert_eq!(field("retries"), 1);
    assert_eq!(field("tls"), true);
    assert_eq!(
        field("source_identity"),
        "spiffe://weft.local/ns/shop/sa/frontend"
    );
    assert_eq!(
        field("destination_identity"),
        "spiffe://weft.local/ns/shop/sa/web"
    );
    let start = field("start_time");
    let start = start.as_str().expect("string");
    assert!(start.ends_with('Z') && start.len() == 24, "{start}");
}

#[test]
fn a_full_queue_drops_lines_and_never_waits() {
    let writer = Writer::with_sink(true, || Box::new(Gated));
    let held = GATE.lock().expect("lock");
    let started = Instant::now();
    // The writer thread takes one line and waits in its write (a line larger
    // than its buffer goes straight through); the queue takes QUEUE more; the
    // rest are dropped.
    let line = bytes::Bytes::from(vec![b' '; 128 * 1024]);
    let sent = QUEUE + 100;
    let accepted = (0..sent).filter(|_| writer.write(line.clone())).count();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "writes waited for the writer"
    );
    drop(held);
    assert!(
        (QUEUE..=QUEUE + 1).contains(&accepted),
        "{accepted} of {sent} accepted"
    );
}

#[test]
fn addresses_are_written_as_display_writes_them() {
    for text in [
        "0.0.0.0:0",
        "255.255.255.255:65535",
        "10.1.20.3:8080",
        "[::1]:80",
    ] {
        let address: SocketAddr = text.parse().expect("address");
        let line = super::line::Line {
            upstream_host: Some(address),
            ..Default::default()
        };
        let json: serde_json::Value = serde_json::from_slice(&line.to_bytes()).expect("json");
        assert_eq!(json["upstream_host"], address.to_string(), "{text}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&super::line::Line::default().to_bytes()).expect("json");
    assert_eq!(json["upstream_host"], serde_json::Value::Null);
}
