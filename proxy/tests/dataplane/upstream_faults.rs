//! The upstream side of the HTTP/1.1 edge, against raw upstreams that send exact
//! bytes: a failure of the client's own request body is the client's (400,
//! `error="client"`), the proxy's answers name no upstream address, responses
//! with duplicate or malformed framing are refused (502) and their connection
//! closed, and a silent upstream is given up after the response inactivity
//! timeout (504 before the head; after it, the response is cut).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::mesh::{service, snapshot};
use crate::support::upstream::closed_port;
use crate::support::{recorder, sample, wait_until, Proxy};

/// An HTTP/1.1 upstream that answers every request head with the same bytes, in
/// one write (nothing: it never answers), and counts connections and requests.
struct RawUpstream {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    /// Connections the proxy closed.
    closed: Arc<AtomicUsize>,
}

impl RawUpstream {
    async fn start(answer: Vec<u8>) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(answer);
        let counters = (requests.clone(), accepted.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (requests, accepted, closed) = counters.clone();
                let answer = answer.clone();
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    while read_head(&mut stream).await.is_some() {
                        requests.fetch_add(1, Ordering::SeqCst);
                        if !answer.is_empty() && stream.write_all(&answer).await.is_err() {
                            break;
                        }
                    }
                    closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        RawUpstream {
            addr,
            requests,
            accepted,
            closed,
        }
    }

    async fn wait_closed(&self, count: usize) {
        wait_until(
            "the proxy to close its upstream connection",
            Duration::from_secs(5),
            || async { self.closed.load(Ordering::SeqCst) >= count },
        )
        .await;
    }
}

/// Reads through the blank line that ends a head; `None` at the end of the stream.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(head)
}

/// A proxy with an `--upstream` listener for `shop/<name>` (an `http1` service
/// on `endpoint`), plus `flags`.
async fn proxy_for(name: &str, endpoint: SocketAddr, flags: &[&str]) -> Proxy {
    let listener = format!("shop/{name}=127.0.0.1:0");
    let mut args = vec!["--upstream", listener.as_str()];
    args.extend_from_slice(flags);
    let svc = service(name, "http1").endpoint(endpoint);
    Proxy::start(snapshot(&[svc]), &args).await
}

/// Sends `request` on a new connection and reads what comes back until the
/// proxy closes it (requests say `connection: close`).
async fn exchange(proxy: &Proxy, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write");
    read_to_close(&mut stream).await
}

async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        // A reset is a close too.
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "the proxy kept the connection open: {seen:?}");
    String::from_utf8_lossy(&seen).into_owned()
}

fn errors(service: &str, error: &str) -> Option<f64> {
    let service = format!("shop/{service}");
    sample(
        &recorder().render(),
        "weft_request_errors_total",
        &[("service", &service), ("error", error)],
    )
}

const GET: &[u8] = b"GET /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";

#[tokio::test]
async fn a_malformed_chunked_request_body_is_the_clients_failure() {
    let upstream = RawUpstream::start(Vec::new()).await;
    let proxy = proxy_for("edge-bad-chunk", upstream.addr, &[]).await;
    let reply = exchange(
        &proxy,
        b"POST /x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
          5\r\nhello\r\nzz\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
    assert_eq!(errors("edge-bad-chunk", "client"), Some(1.0));
    assert_eq!(errors("edge-bad-chunk", "upstream"), None);
    // The upstream got a request that cannot be finished: its connection goes.
    upstream.wait_closed(1).await;
}

/// Clients that break their own uploads cannot eject a healthy endpoint: their
/// failures feed neither outlier detection nor the balancer (six in a row used to
/// eject it with the default settings).
#[tokio::test]
async fn clients_breaking_their_uploads_do_not_eject_a_healthy_endpoint() {
    let upstream =
        RawUpstream::start(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()).await;
    let proxy = proxy_for("edge-no-eject", upstream.addr, &[]).await;
    for _ in 0..8 {
        let reply = exchange(
            &proxy,
            b"POST /x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
              5\r\nhello\r\nzz\r\n",
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
    }
    let text = recorder().render();
    let series = |name| sample(&text, name, &[("service", "shop/edge-no-eject")]);
    assert_eq!(
        series("weft_outlier_ejections_total").unwrap_or(0.0),
        0.0,
        "{text}"
    );
    // The endpoint still serves the next, well-formed request.
    let reply = exchange(&proxy, GET).await;
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
}

#[tokio::test]
async fn a_client_aborting_its_upload_is_the_clients_failure() {
    let upstream = RawUpstream::start(Vec::new()).await;
    let proxy = proxy_for("edge-abort", upstream.addr, &[]).await;
    let mut stream = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    // Too large to be read whole before forwarding: it streams.
    stream
        .write_all(b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n0123456789")
        .await
        .expect("write");
    wait_until(
        "the request to reach the upstream",
        Duration::from_secs(5),
        || async { upstream.requests.load(Ordering::SeqCst) == 1 },
    )
    .await;
    drop(stream);
    wait_until(
        "the abort to count as the client's",
        Duration::from_secs(5),
        || async { errors("edge-abort", "client") == Some(1.0) },
    )
    .await;
    assert_eq!(errors("edge-abort", "upstream"), None);
    upstream.wait_closed(1).await;
}

#[tokio::test]
async fn error_answers_do_not_name_the_upstream_address() {
    let nowhere = closed_port().await;
    let proxy = proxy_for("edge-no-address", nowhere, &[]).await;
    let reply = exchange(&proxy, GET).await;
    assert!(reply.starts_with("HTTP/1.1 502 "), "{reply}");
    let lower = reply.to_ascii_lowercase();
    assert!(
        lower.contains("weft-proxy-error: upstream connection failed"),
        "{reply}"
    );
    assert!(!reply.contains("127.0.0.1"), "{reply}");
    assert!(!reply.contains(&nowhere.port().to_string()), "{reply}");
}

#[tokio::test]
async fn equal_duplicate_content_lengths_reach_the_client_as_one() {
    let upstream = RawUpstream::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 005\r\n\r\nhello".to_vec(),
    )
    .await;
    let proxy = proxy_for("edge-dup-length", upstream.addr, &[]).await;
    let reply = exchange(&proxy, GET).await;
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    let lengths: Vec<&str> = reply
        .lines()
        .filter(|line| line.to_ascii_lowercase().starts_with("content-length:"))
        .collect();
    assert_eq!(lengths, ["content-length: 5"], "{reply}");
    assert!(reply.ends_with("\r\n\r\nhello"), "{reply}");
}

#[tokio::test]
async fn differing_content_lengths_fail_the_response_and_close_the_connection() {
    let upstream = RawUpstream::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!".to_vec(),
    )
    .await;
    let proxy = proxy_for("edge-two-lengths", upstream.addr, &[]).await;
    let reply = exchange(&proxy, GET).await;
    assert!(reply.starts_with("HTTP/1.1 502 "), "{reply}");
    assert_eq!(errors("edge-two-lengths", "upstream"), Some(1.0));
    upstream.wait_closed(1).await;
}

#[tokio::test]
async fn lenient_chunk_sizes_fail_the_response_and_close_the_connection() {
    for (case, size_line) in [
        ("space", &b" 5\r\n"[..]),
        ("form-feed", &b"\x0c5\r\n"[..]),
        ("stray-cr", &b"5\r\r\n"[..]),
        ("trailing-space", &b"5 \r\n"[..]),
    ] {
        let mut answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        answer.extend_from_slice(size_line);
        answer.extend_from_slice(b"hello\r\n0\r\n\r\n");
        let upstream = RawUpstream::start(answer).await;
        let name = format!("edge-chunk-{case}");
        let proxy = proxy_for(&name, upstream.addr, &[]).await;
        let reply = exchange(&proxy, GET).await;
        assert!(reply.starts_with("HTTP/1.1 502 "), "{case}: {reply}");
        assert_eq!(errors(&name, "upstream"), Some(1.0), "{case}");
        upstream.wait_closed(1).await;
    }
}

#[tokio::test]
async fn chunk_extensions_are_accepted_and_the_connection_pooled() {
    let upstream = RawUpstream::start(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n"
            .to_vec(),
    )
    .await;
    let proxy = proxy_for("edge-chunk-ext", upstream.addr, &[]).await;
    for _ in 0..2 {
        let reply = exchange(&proxy, GET).await;
        assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
        assert!(reply.contains("\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), "{reply}");
    }
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 1, "not pooled");
}

#[tokio::test]
async fn a_response_head_over_64_kib_in_one_write_fails_the_response() {
    let mut answer = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    answer.resize(answer.len() + 70 * 1024, b'a');
    answer.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
    let upstream = RawUpstream::start(answer).await;
    let proxy = proxy_for("edge-big-head", upstream.addr, &[]).await;
    let reply = exchange(&proxy, GET).await;
    assert!(reply.starts_with("HTTP/1.1 502 "), "{reply}");
    assert!(reply.contains("larger than 64 KiB"), "{reply}");
    upstream.wait_closed(1).await;
}

#[tokio::test]
async fn a_silent_upstream_gets_its_client_a_504_after_the_idle_timeout() {
    let upstream = RawUpstream::start(Vec::new()).await;
    let proxy = proxy_for(
        "edge-silent",
        upstream.addr,
        &["--response-idle-timeout-ms", "300"],
    )
    .await;
    let started = Instant::now();
    let reply = exchange(&proxy, GET).await;
    let waited = started.elapsed();
    assert!(reply.starts_with("HTTP/1.1 504 "), "{reply}");
    assert!(reply.contains("upstream sent nothing for 300ms"), "{reply}");
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert_eq!(errors("edge-silent", "timeout"), Some(1.0));
    upstream.wait_closed(1).await;
}

#[tokio::test]
async fn an_upstream_stalling_mid_body_gets_the_response_cut_and_its_connection_closed() {
    let upstream =
        RawUpstream::start(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789".to_vec())
            .await;
    let proxy = proxy_for(
        "edge-stall",
        upstream.addr,
        &["--response-idle-timeout-ms", "300"],
    )
    .await;
    let started = Instant::now();
    let reply = exchange(&proxy, GET).await;
    let waited = started.elapsed();
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(
        reply.ends_with("\r\n\r\n0123456789"),
        "cut after what came: {reply}"
    );
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    upstream.wait_closed(1).await;
}

#[tokio::test]
async fn an_upgrade_to_a_silent_upstream_gets_a_504_after_the_idle_timeout() {
    let upstream = RawUpstream::start(Vec::new()).await;
    let proxy = proxy_for(
        "edge-silent-upgrade",
        upstream.addr,
        &["--response-idle-timeout-ms", "300"],
    )
    .await;
    let mut stream = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        )
        .await
        .expect("write");
    let started = Instant::now();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut stream))
        .await
        .expect("answered within 5 s")
        .expect("a response head");
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 504 "), "{head}");
    assert!(started.elapsed() >= Duration::from_millis(300));
}
