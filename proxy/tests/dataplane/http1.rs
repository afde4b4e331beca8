//! HTTP/1.1 through the proxy: explicit, captured and host-routed outbound,
//! inbound, bodies (chunked, 10 MiB), hop-by-hop headers, upgrades, pooling,
//! failover and the proxy's own error answers.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_proxy::dataplane::Settings;

use crate::support::mesh::{service, snapshot};
use crate::support::upstream::{closed_port, HttpUpstream};
use crate::support::{require, run, Client, Proxy};

#[tokio::test]
async fn explicit_upstream_listener_reaches_the_service() {
    let a = HttpUpstream::start("a").await;
    let web = service("h1-explicit", "http1").endpoint(a.addr);
    let proxy = Proxy::start(
        snapshot(&[web]),
        &["--upstream", "shop/h1-explicit=127.0.0.1:0"],
    )
    .await;
    let mut client = Client::connect(proxy.upstreams[0]).await;
    let reply = client.get("anything", "/").await;
    assert_eq!((reply.status, reply.body.as_ref()), (200, b"a".as_ref()));
    assert_eq!(reply.upstream(), "a");
    proxy.shutdown().await;
}

#[tokio::test]
async fn keep_alive_requests_share_one_pooled_upstream_connection() {
    let a = HttpUpstream::start("a").await;
    let web = service("h1-pooled", "http1").endpoint(a.addr);
    let proxy = Proxy::start(
        snapshot(&[web]),
        &["--upstream", "shop/h1-pooled=127.0.0.1:0"],
    )
    .await;
    let mut client = Client::connect(proxy.upstreams[0]).await;
    for _ in 0..50 {
        assert_eq!(client.get("x", "/").await.status, 200);
    }
    assert_eq!(a.requests.load(std::sync::atomic::Ordering::SeqCst), 50);
    assert_eq!(a.open_connections(), 1);
}

#[tokio::test]
async fn idle_pooled_connections_close_after_the_idle_timeout() {
    let a = HttpUpstream::start("a").await;
    let web = service("h1-idle", "http1").endpoint(a.addr);
    let settings = Settings {
        pool_idle_timeout: Duration::from_millis(200),
        ..Settings::default()
    };
    let proxy = Proxy::start_with(
        snapshot(&[web]),
        &["--upstream", "shop/h1-idle=127.0.0.1:0"],
        settings,
    )
    .await;
    let mut client = Client::connect(proxy.upstreams[0]).await;
    assert_eq!(client.get("x", "/").await.status, 200);
    assert_eq!(a.open_connections(), 1);
    crate::support::wait_until(
        "the idle upstream connection to close",
        Duration::from_secs(5),
        || async { a.open_connections() == 0 },
    )
    .await;
}

#[tokio::test]
async fn curl_chunked_upload_and_a_10_mib_body_round_trip_intact() {
    let curl = require("curl", "curl");
    let sha = require("sha256sum", "coreutils");
    let a = HttpUpstream::start("a").await;
    let web = service("h1-bodies", "http1").endpoint(a.addr);
    let proxy = Proxy::start(
        snapshot(&[web]),
        &["--upstream", "shop/h1-bodies=127.0.0.1:0"],
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in.bin");
    let output = dir.path().join("out.bin");
    let mut data = vec![0u8; 10 * 1024 * 1024];
    rand::Rng::fill(&mut rand::rng(), data.as_mut_slice());
    std::fs::write(&input, &data).expect("write input");
    let url = format!("http://{}/echo", proxy.upstreams[0]);
    let (input_s, output_s) = (input.display().to_string(), output.display().to_string());
    for chunked in [true, false] {
        let mut args = vec!["-sS", "--fail", "-o", &output_s, "--data-binary"];
        let at_input = format!("@{input_s}");
        args.push(&at_input);
        if chunked {
            args.extend(["-H", "Transfer-Encoding: chunked"]);
        }
        args.push(&url);
        run(&curl, &args).await;
        let sums = run(&sha, &[&input_s, &output_s]).await;
        let hashes: Vec<&str> = sums
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(hashes.len(), 2, "{sums}");
        assert_eq!(
            hashes[0], hashes[1],
            "chunked={chunked}: body changed in transit"
        );
    }
}

#[tokio::test]
async fn hop_by_hop_headers_stop_at_the_proxy() {
    let a = HttpUpstream::start("a").await;
    let web = service("h1-hop", "http1").endpoint(a.addr);
    let proxy = Proxy::start(snapshot(&[web]), &["--upstream", "shop/h1-hop=127.0.0.1:0"]).await;
    let mut client = Client::connect(proxy.upstreams[0]).await;
    let request = Request::get("/headers")
        .header("host", "h1-hop.shop")
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "gzip")
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = client.send(request).await.expect("response");
    let seen = String::from_utf8_lossy(&reply.body).to_string();
    for gone in [
        "connection:",
        "x-private",
        "keep-alive",
        "proxy-connection",
        "te:",
    ] {
        assert!(!seen.contains(gone), "{gone} reached the upstream:\n{seen}");
    }
    assert!(seen.contains("x-end-to-end: kept"), "{seen}");
    assert!(seen.contains("host: h1-hop.shop"), "{seen}");
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled_end_to_end() {
    let a = HttpUpstream::start("a").await;
    let web = service("h1-ws", "http1").endpoint(a.addr);
    let proxy = Proxy::start(snapshot(&[web]), &["--upstream", "shop/h1-ws=127.0.0.1:0"]).await;
    let mut stream = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: h1-ws.shop\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .expect("write");
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for message in [&b"hello"[..], b"over the tunnel"] {
        stream.write_all(message).await.expect("write");
        let mut echoed = vec![0u8; message.len()];
        stream.read_exact(&mut echoed).await.expect("echo");
        assert_eq!(echoed, message);
    }
}

/// A CONNECT reaches the upstream with its authority-form target, and its 2xx
/// turns both hops into one tunnel.
#[tokio::test]
async fn connect_is_tunnelled_end_to_end() {
    let a = HttpUpstream::start("a").await;
    let web = service("h1-connect", "http1").endpoint(a.addr);
    let proxy = Proxy::start(
        snapshot(&[web]),
        &["--upstream", "shop/h1-connect=127.0.0.1:0"],
    )
    .await;
    let mut stream = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    stream
        .write_all(b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n")
        .await
        .expect("write");
    let head = read_head(&mut stream).await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("x-connect-target: db.internal:5432"),
        "{head}"
    );
    assert!(head.contains("x-upstream: a"), "{head}");
    for message in [&b"bytes of another protocol"[..], b"\0\x01\x02 and more"] {
        stream.write_all(message).await.expect("write");
        let mut echoed = vec![0u8; message.len()];
        stream.read_exact(&mut echoed).await.expect("echo");
        assert_eq!(echoed, message);
    }
}

/// A CONNECT the upstream refuses is answered as any response; one the proxy
/// cannot tunnel (HTTP/1.0 has no CONNECT tunnel here) gets a 501 that says why,
/// and never reaches the upstream.
#[tokio::test]
async fn a_refused_or_untunnellable_connect_gets_a_status() {
    let a = HttpUpstream::start("a").await;
    let web = service("h1-connect-no", "http1").endpoint(a.addr);
    let proxy = Proxy::start(
        snapshot(&[web]),
        &["--upstream", "shop/h1-connect-no=127.0.0.1:0"],
    )
    .await;
    let mut refused = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    refused
        .write_all(b"CONNECT refused.example:443 HTTP/1.1\r\nHost: refused.example:443\r\n\r\n")
        .await
        .expect("write");
    let head = read_head(&mut refused).await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert!(head.contains("x-upstream: a"), "{head}");

    let seen = a.requests.load(Ordering::SeqCst);
    let mut old = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    old.write_all(b"CONNECT db.internal:5432 HTTP/1.0\r\nHost: db.internal:5432\r\n\r\n")
        .await
        .expect("write");
    let head = read_head(&mut old).await.to_ascii_lowercase();
    assert_eq!(head.split_whitespace().nth(1), Some("501"), "{head}");
    assert!(
        head.contains("weft-proxy-error: not supported: connect"),
        "{head}"
    );
    assert_eq!(
        a.requests.load(Ordering::SeqCst),
        seen,
        "the untunnellable CONNECT reached the upstream"
    );
}

async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = stream.read(&mut byte).await.expect("read");
        assert!(n == 1, "closed while reading the response head");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn uncaptured_outbound_routes_by_host_and_answers_404_for_unknown_hosts() {
    let a = HttpUpstream::start("a").await;
    let web = service("h1-host", "http1").endpoint(a.addr);
    let proxy = Proxy::start(snapshot(&[web]), &[]).await;
    let mut client = Client::connect(proxy.outbound).await;
    assert_eq!(client.get("h1-host.shop", "/").await.upstream(), "a");
    assert_eq!(client.get("H1-HOST.shop:80", "/").await.upstream(), "a");
    let reply = client.get("nowhere.example", "/").await;
    assert_eq!(reply.status, 404);
    assert!(reply.headers.contains_key("weft-proxy-error"));
}

#[tokio::test]
async fn captured_virtual_ip_routes_to_the_service() {
    let a = HttpUpstream::start("a").await;
    let web = service("h1-vip", "http1")
        .virtual_ip("10.96.0.7")
        .endpoint(a.addr);
    let proxy = Proxy::start(snapshot(&[web]), &[]).await;
    let vip: SocketAddr = "10.96.0.7:80".parse().expect("addr");
    let mut client = Client::over(proxy.connect_captured(vip).await).await;
    // The Host header is irrelevant: the virtual IP decided.
    assert_eq!(client.get("10.96.0.7", "/").await.upstream(), "a");
}

#[tokio::test]
async fn captured_non_mesh_http_goes_by_host_or_to_the_original_destination() {
    let mesh = HttpUpstream::start("mesh").await;
    let outside = HttpUpstream::start("outside").await;
    let web = service("h1-passthrough", "http1").endpoint(mesh.addr);
    let proxy = Proxy::start(snapshot(&[web]), &[]).await;
    let mut client = Client::over(proxy.connect_captured(outside.addr).await).await;
    assert_eq!(
        client.get("h1-passthrough.shop", "/").await.upstream(),
        "mesh"
    );
    assert_eq!(client.get("example.com", "/").await.upstream(), "outside");
}

#[tokio::test]
async fn inbound_delivers_to_the_forward_address_or_the_original_port() {
    let app = HttpUpstream::start("app").await;
    let forward = app.addr.to_string();
    let proxy = Proxy::start(snapshot(&[]), &["--inbound-forward", &forward]).await;
    let mut client = Client::connect(proxy.inbound).await;
    assert_eq!(client.get("app", "/").await.upstream(), "app");

    // Captured: the pod IP and port the peer dialled; delivered to 127.0.0.1:port.
    let proxy = Proxy::start(snapshot(&[]), &[]).await;
    let dialled: SocketAddr = format!("10.0.0.9:{}", app.addr.port())
        .parse()
        .expect("addr");
    let stream = proxy.connect_redirected(proxy.inbound, dialled).await;
    let mut client = Client::over(stream).await;
    assert_eq!(client.get("app", "/").await.upstream(), "app");
}

#[tokio::test]
async fn a_connect_failure_is_retried_on_another_endpoint() {
    let a = HttpUpstream::start("a").await;
    let dead = closed_port().await;
    let web = service("h1-failover", "http1")
        .policy("round_robin")
        .endpoint(dead)
        .endpoint(a.addr);
    let proxy = Proxy::start(
        snapshot(&[web]),
        &["--upstream", "shop/h1-failover=127.0.0.1:0"],
    )
    .await;
    let mut client = Client::connect(proxy.upstreams[0]).await;
    for _ in 0..20 {
        let reply = client.get("x", "/").await;
        assert_eq!((reply.status, reply.upstream()), (200, "a"));
    }
}

#[tokio::test]
async fn no_healthy_endpoint_and_dead_endpoints_answer_502() {
    let a = HttpUpstream::start("a").await;
    let dead = closed_port().await;
    let sick = service("h1-sick", "http1").unhealthy(a.addr);
    let down = service("h1-down", "http1").endpoint(dead);
    let proxy = Proxy::start(
        snapshot(&[sick, down]),
        &[
            "--upstream",
            "shop/h1-sick=127.0.0.1:0",
            "--upstream",
            "shop/h1-down=127.0.0.1:0",
        ],
    )
    .await;
    for addr in &proxy.upstreams {
        let mut client = Client::connect(*addr).await;
        let reply = client.get("x", "/").await;
        assert_eq!(reply.status, 502);
        assert!(reply.headers.contains_key("weft-proxy-error"));
    }
    assert_eq!(a.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// One keep-alive connection, read as raw bytes: pipelined requests answered in
/// order (a body, a 204 and a HEAD with none), a small body sent in two pieces,
/// then a chunked body, which hyper's server takes over, and a request after it.
#[tokio::test]
async fn pipelined_and_mixed_requests_on_one_connection_are_answered_in_order() {
    let a = HttpUpstream::start("a").await;
    let web = service("h1-mixed", "http1").endpoint(a.addr);
    let proxy = Proxy::start(
        snapshot(&[web]),
        &["--upstream", "shop/h1-mixed=127.0.0.1:0"],
    )
    .await;
    let mut stream = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    stream
        .write_all(
            b"GET /first HTTP/1.1\r\nHost: h1-mixed\r\n\r\n\
              GET /status/204 HTTP/1.1\r\nHost: h1-mixed\r\n\r\n\
              HEAD /third HTTP/1.1\r\nHost: h1-mixed\r\n\r\n",
        )
        .await
        .expect("write");
    let (head, body) = read_response(&mut stream, false).await;
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(head.contains("\r\ndate: "), "{head}");
    assert_eq!(body, b"a");
    let (head, body) = read_response(&mut stream, true).await;
    assert!(head.starts_with("http/1.1 204"), "{head}");
    assert!(body.is_empty());
    let (head, body) = read_response(&mut stream, true).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.is_empty(), "a HEAD response carried a body");

    stream.set_nodelay(true).expect("nodelay");
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: h1-mixed\r\ncontent-length: 11\r\n\r\nhello")
        .await
        .expect("write");
    stream.write_all(b" world").await.expect("write");
    let (head, body) = read_response(&mut stream, false).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"hello world");
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: h1-mixed\r\ntransfer-encoding: chunked\r\n\r\n\
              5\r\nchunk\r\n0\r\n\r\n",
        )
        .await
        .expect("write");
    let (head, body, _) = read_chunked(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"chunk");
    stream
        .write_all(b"GET /last HTTP/1.1\r\nHost: h1-mixed\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (head, body) = read_response(&mut stream, false).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"a");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.expect("read to close");
    assert!(rest.is_empty(), "bytes after the last response: {rest:?}");
    assert_eq!(a.requests.load(Ordering::SeqCst), 6);
}

/// A chunked response ends with its trailers for a client that asked for them
/// (`TE: trailers`), and without them for one that did not.
#[tokio::test]
async fn response_trailers_reach_an_http1_client_that_asks_for_them() {
    let a = HttpUpstream::start("a").await;
    let web = service("h1-trailers", "http1").endpoint(a.addr);
    let proxy = Proxy::start(
        snapshot(&[web]),
        &["--upstream", "shop/h1-trailers=127.0.0.1:0"],
    )
    .await;
    let mut stream = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    stream
        .write_all(b"GET /trailers HTTP/1.1\r\nHost: h1-trailers\r\nTE: trailers\r\n\r\n")
        .await
        .expect("write");
    let (head, body, trailers) = read_chunked(&mut stream).await;
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(body, b"part one, part two");
    assert_eq!(trailers, "x-checksum: abc\r\n");
    stream
        .write_all(b"GET /trailers HTTP/1.1\r\nHost: h1-trailers\r\n\r\n")
        .await
        .expect("write");
    let (_, body, trailers) = read_chunked(&mut stream).await;
    assert_eq!(body, b"part one, part two");
    assert_eq!(trailers, "");
}

/// A client that closes its connection while its request is upstream abandons
/// the request: the proxy drops the upstream exchange rather than wait for it.
#[tokio::test]
async fn a_client_that_goes_away_cancels_its_upstream_request() {
    let a = HttpUpstream::start_slow("a", Duration::from_secs(60)).await;
    let web = service("h1-gone", "http1").endpoint(a.addr);
    let proxy = Proxy::start(
        snapshot(&[web]),
        &["--upstream", "shop/h1-gone=127.0.0.1:0"],
    )
    .await;
    let mut stream = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: h1-gone\r\n\r\n")
        .await
        .expect("write");
    crate::support::wait_until(
        "the request to reach the upstream",
        Duration::from_secs(5),
        || async { a.requests.load(Ordering::SeqCst) == 1 },
    )
    .await;
    assert_eq!(a.open_connections(), 1);
    drop(stream);
    crate::support::wait_until(
        "the upstream connection to close",
        Duration::from_secs(5),
        || async { a.open_connections() == 0 },
    )
    .await;
}

/// Reads one response whose body is delimited by `Content-Length` (or absent:
/// `bodyless`); the head comes back lower-cased.
async fn read_response(stream: &mut TcpStream, bodyless: bool) -> (String, Vec<u8>) {
    let head = read_head(stream).await.to_ascii_lowercase();
    if bodyless {
        return (head, Vec::new());
    }
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .unwrap_or_else(|| panic!("no content-length: {head}"))
        .trim()
        .parse()
        .expect("length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.expect("body");
    (head, body)
}

/// Reads one chunked response: its head, its body, and its trailer lines.
async fn read_chunked(stream: &mut TcpStream) -> (String, Vec<u8>, String) {
    let head = read_head(stream).await.to_ascii_lowercase();
    let mut body = Vec::new();
    loop {
        let line = read_line(stream).await;
        let size = usize::from_str_radix(line.trim_end(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        let mut chunk = vec![0u8; size + 2];
        stream.read_exact(&mut chunk).await.expect("chunk");
        assert!(chunk.ends_with(b"\r\n"));
        body.extend_from_slice(&chunk[..size]);
    }
    let mut trailers = String::new();
    loop {
        let line = read_line(stream).await;
        if line == "\r\n" {
            break;
        }
        trailers.push_str(&line.to_ascii_lowercase());
    }
    (head, body, trailers)
}

async fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).await.expect("read"), 1, "closed");
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// A request head that parses but names a target no URI can hold is answered
/// 400 and the connection closes, as hyper's server did; nothing goes upstream.
#[tokio::test]
async fn a_malformed_request_target_gets_400_and_a_close() {
    let a = HttpUpstream::start("a").await;
    let web = service("h1-bad", "http1").endpoint(a.addr);
    let proxy = Proxy::start(snapshot(&[web]), &["--upstream", "shop/h1-bad=127.0.0.1:0"]).await;
    let mut stream = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    stream
        .write_all(
            b"GET /a<b HTTP/1.1\r\nHost: h1-bad\r\n\r\nGET / HTTP/1.1\r\nHost: h1-bad\r\n\r\n",
        )
        .await
        .expect("write");
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .expect("read to close");
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(
        answer.starts_with("http/1.1 400 bad request\r\n"),
        "{answer}"
    );
    assert_eq!(answer.matches("http/1.1").count(), 1, "{answer}");
    assert_eq!(a.requests.load(Ordering::SeqCst), 0);
}
