//! The HTTP/1.1 edge on raw sockets: stalled uploads are abandoned (408 and a
//! close, the upstream request cancelled, the in-flight slot freed) on both
//! HTTP/1 server paths and on HTTP/2 streams; Host and Content-Length are
//! normalised; heads are bounded; connections beyond the limit are refused.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_proto::v1;
use weft_proxy::dataplane::Settings;

use crate::support::mesh::{service, snapshot};
use crate::support::upstream::HttpUpstream;
use crate::support::{recorder, sample, wait_until, Client, Proxy};

const BODY_TIMEOUT: Duration = Duration::from_millis(300);

fn short_body_timeout() -> Settings {
    Settings {
        request_body_timeout: BODY_TIMEOUT,
        ..Settings::default()
    }
}

/// Writes `request`, then reads until the proxy closes the connection.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_to_close(&mut stream).await
}

async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the proxy closed the connection within 10 s")
        .expect("read");
    String::from_utf8_lossy(&answer).to_ascii_lowercase()
}

/// The status code of a response read as text.
fn status(answer: &str) -> &str {
    answer.get(9..12).unwrap_or("")
}

fn body_timeouts(service: &str) -> f64 {
    let labels = [("service", service), ("error", "body_timeout")];
    sample(&recorder().render(), "weft_request_errors_total", &labels).unwrap_or(0.0)
}

/// 25 uploads that stall after ten bytes (half with a length, half chunked, all
/// on hyper's server) against `maxRequests: 20`: each is answered 408 (or 503
/// while the others hold every slot) and closed once the timeout passes, the
/// upstream sees every forwarded upload cut, and the service serves again.
#[tokio::test]
async fn stalled_uploads_are_abandoned_and_free_their_slots() {
    let a = HttpUpstream::start("a").await;
    let web = service("edge-stall", "http1").endpoint(a.addr).with(|s| {
        s.circuit_breakers = Some(v1::CircuitBreakers {
            max_requests: 20,
            ..Default::default()
        })
    });
    let proxy = Proxy::start_with(
        snapshot(&[web]),
        &["--upstream", "shop/edge-stall=127.0.0.1:0"],
        short_body_timeout(),
    )
    .await;
    let addr = proxy.upstreams[0];
    let clients: Vec<_> = (0..25)
        .map(|i| {
            let request: &[u8] = match i % 2 {
                0 => b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0123456789",
                _ => b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n",
            };
            tokio::spawn(exchange(addr, request))
        })
        .collect();
    let mut timed_out: u32 = 0;
    for client in clients {
        let answer = client.await.expect("client");
        match answer.get(..12) {
            Some("http/1.1 408") => timed_out += 1,
            Some("http/1.1 503") => {}
            _ => panic!("neither 408 nor 503: {answer}"),
        }
    }
    assert!(timed_out >= 20, "{timed_out} answered 408");
    assert_eq!(body_timeouts("shop/edge-stall"), f64::from(timed_out));
    wait_until(
        "every abandoned upload to close its upstream connection",
        Duration::from_secs(5),
        || async {
            a.open_connections() == 0 && a.aborted.load(Ordering::SeqCst) == timed_out as usize
        },
    )
    .await;
    let mut client = Client::connect(addr).await;
    assert_eq!(client.get("x", "/").await.status, 200);
}

/// The response had begun (the upstream echoes as it reads): the stall cuts it
/// short and closes the connection, and is counted all the same.
#[tokio::test]
async fn an_upload_that_stalls_after_its_response_began_is_cut_short() {
    let a = HttpUpstream::start("a").await;
    let web = service("edge-stall-echo", "http1").endpoint(a.addr);
    let proxy = Proxy::start_with(
        snapshot(&[web]),
        &["--upstream", "shop/edge-stall-echo=127.0.0.1:0"],
        short_body_timeout(),
    )
    .await;
    let answer = exchange(
        proxy.upstreams[0],
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0123456789",
    )
    .await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.ends_with("0123456789"), "{answer}");
    assert_eq!(body_timeouts("shop/edge-stall-echo"), 1.0);
    wait_until(
        "the upstream connection to close",
        Duration::from_secs(5),
        || async { a.open_connections() == 0 },
    )
    .await;
}

/// A small body the own server reads whole before forwarding: a stall there
/// gets 408 and a close, and nothing reaches the upstream.
#[tokio::test]
async fn a_small_body_that_stalls_gets_408_before_it_is_forwarded() {
    let a = HttpUpstream::start("a").await;
    let web = service("edge-stall-small", "http1").endpoint(a.addr);
    let proxy = Proxy::start_with(
        snapshot(&[web]),
        &["--upstream", "shop/edge-stall-small=127.0.0.1:0"],
        short_body_timeout(),
    )
    .await;
    let answer = exchange(
        proxy.upstreams[0],
        b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await;
    assert!(answer.starts_with("http/1.1 408"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    assert_eq!(a.requests.load(Ordering::SeqCst), 0);
    assert_eq!(body_timeouts("shop/edge-stall-small"), 1.0);
}

/// To an HTTP/2 upstream, the abandoned upload's stream is reset.
#[tokio::test]
async fn a_stalled_upload_to_an_http2_upstream_resets_its_stream() {
    let a = HttpUpstream::start("a").await;
    let grpc = service("edge-stall-h2", "http2").endpoint(a.addr);
    let proxy = Proxy::start_with(
        snapshot(&[grpc]),
        &["--upstream", "shop/edge-stall-h2=127.0.0.1:0"],
        short_body_timeout(),
    )
    .await;
    let answer = exchange(
        proxy.upstreams[0],
        b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n",
    )
    .await;
    assert!(answer.starts_with("http/1.1 408"), "{answer}");
    wait_until(
        "the upstream to see its stream reset",
        Duration::from_secs(5),
        || async { a.aborted.load(Ordering::SeqCst) == 1 },
    )
    .await;
}

/// HTTP/2 streams: a stalled body gets 408 and a reset; a stream whose client
/// sends nothing while its response keeps moving is left alone, for longer than
/// the timeout.
#[tokio::test]
async fn an_http2_stream_is_abandoned_only_when_neither_direction_moves() {
    let a = HttpUpstream::start("a").await;
    let grpc = service("edge-stall-h2c", "http2").endpoint(a.addr);
    let proxy = Proxy::start_with(
        snapshot(&[grpc]),
        &["--upstream", "shop/edge-stall-h2c=127.0.0.1:0"],
        short_body_timeout(),
    )
    .await;
    let stream = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(stream).await.expect("handshake");
    tokio::spawn(connection);
    let post = |path: &str| {
        Request::post(format!("http://edge-stall-h2c.shop{path}"))
            .body(())
            .expect("request")
    };
    let mut client = client.ready().await.expect("ready");
    let (stalled, mut stalled_body) = client.send_request(post("/sink"), false).expect("sent");
    stalled_body
        .send_data(Bytes::from_static(b"0123456789"), false)
        .expect("data");
    let mut client = client.ready().await.expect("ready");
    let (dripping, _dripping_body) = client.send_request(post("/drip"), false).expect("sent");

    let response = tokio::time::timeout(Duration::from_secs(10), stalled)
        .await
        .expect("an answer within 10 s")
        .expect("a response head");
    assert_eq!(response.status(), 408);
    wait_until(
        "the upstream to see the stalled stream reset",
        Duration::from_secs(5),
        || async { a.aborted.load(Ordering::SeqCst) == 1 },
    )
    .await;

    let response = dripping.await.expect("a response head");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = Vec::new();
    while let Some(data) = body.data().await {
        let data = data.expect("the dripping response was not cut");
        let _ = body.flow_control().release_capacity(data.len());
        received.extend_from_slice(&data);
    }
    let text = String::from_utf8_lossy(&received);
    assert_eq!(text.lines().count(), 10, "{text}");
    assert_eq!(body_timeouts("shop/edge-stall-h2c"), 1.0);
}

/// An absolute-form target is routed by its authority and forwarded with that
/// authority as Host; two Host fields get 400 and a close; a repeated equal
/// Content-Length is forwarded once. On the own server and on hyper's (which
/// takes HTTP/1.0).
#[tokio::test]
async fn host_and_content_length_are_normalised_on_both_servers() {
    let a = HttpUpstream::start("a").await;
    let web = service("edge-host", "http1").endpoint(a.addr);
    let proxy = Proxy::start(snapshot(&[web]), &[]).await;
    let addr = proxy.outbound;
    for version in ["1.1", "1.0"] {
        let answer = exchange(
            addr,
            format!(
                "GET http://edge-host.shop/headers HTTP/{version}\r\nHost: other.t\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(status(&answer), "200", "{version}: {answer}");
        assert!(answer.contains("\nhost: edge-host.shop"), "{answer}");
        assert!(!answer.contains("other.t"), "{answer}");

        let answer = exchange(
            addr,
            format!("GET /headers HTTP/{version}\r\nHost: edge-host.shop\r\nHost: other.t\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!(status(&answer), "400", "{version}: {answer}");

        let answer = exchange(
            addr,
            format!(
                "POST /headers HTTP/{version}\r\nHost: edge-host.shop\r\nConnection: close\r\n\
                 Content-Length: 5\r\nContent-Length: 005\r\n\r\nhello"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(status(&answer), "200", "{version}: {answer}");
        assert_eq!(
            answer.matches("content-length: 5\n").count()
                + answer.matches("content-length: 5\r").count(),
            1,
            "{answer}"
        );
        assert!(!answer.contains("content-length: 005"), "{answer}");
    }
    assert_eq!(a.requests.load(Ordering::SeqCst), 4);
}

/// A head that grows past 64 KiB without ending gets 431 and a close (hyper's
/// own bound was ~400 KiB, held per connection until the idle timeout).
#[tokio::test]
async fn a_head_over_64_kib_gets_431_and_a_close() {
    let a = HttpUpstream::start("a").await;
    let web = service("edge-head", "http1").endpoint(a.addr);
    let proxy = Proxy::start(
        snapshot(&[web]),
        &["--upstream", "shop/edge-head=127.0.0.1:0"],
    )
    .await;
    let mut stream = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    // 66 KiB in all: past the bound, yet all read by the proxy, so that its
    // close is no reset that could overtake the answer.
    let mut head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    head.resize(66 * 1024, b'a');
    stream.write_all(&head).await.expect("write");
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("http/1.1 431"), "{answer}");
    assert_eq!(a.requests.load(Ordering::SeqCst), 0);
}

/// Whether a new connection gets a response (a refused one is closed unread,
/// which may reset it).
async fn served(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    matches!(read, Ok(Ok(_))) && answer.starts_with(b"HTTP/1.1 200")
}

fn refused() -> f64 {
    let labels = [("direction", "outbound")];
    sample(
        &recorder().render(),
        "weft_downstream_connections_refused_total",
        &labels,
    )
    .unwrap_or(0.0)
}

/// With room for two connections a third is closed at once and counted; once
/// one of the two closes, a new connection is served again.
#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let a = HttpUpstream::start("a").await;
    let web = service("edge-limit", "http1").endpoint(a.addr);
    let settings = Settings {
        max_connections: 2,
        ..Settings::default()
    };
    let proxy = Proxy::start_with(
        snapshot(&[web]),
        &["--upstream", "shop/edge-limit=127.0.0.1:0"],
        settings,
    )
    .await;
    let addr = proxy.upstreams[0];
    let mut first = Client::connect(addr).await;
    let mut second = Client::connect(addr).await;
    assert_eq!(first.get("x", "/").await.status, 200);
    assert_eq!(second.get("x", "/").await.status, 200);
    let before = refused();
    let mut third = TcpStream::connect(addr).await.expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), third.read(&mut byte))
        .await
        .expect("the connection over the limit was closed within 10 s");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(refused(), before + 1.0);

    drop(first);
    wait_until(
        "a new connection to be served",
        Duration::from_secs(5),
        || async { served(addr).await },
    )
    .await;
    assert_eq!(second.get("x", "/").await.status, 200);
}
