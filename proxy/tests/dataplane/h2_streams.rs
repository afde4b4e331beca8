//! Single streams through the proxy's HTTP/2 server and client, seen from an
//! upstream on the `h2` crate that reports every frame of a request body and
//! every reset: a request its client drops reaches the upstream as RST_STREAM; a
//! stream whose response head arrives before its request body ends keeps flowing
//! both ways until the client's reset is passed on, and across a drain; a client
//! breaking the protocol gets GOAWAY and the proxy serves on; an idle connection
//! gets GOAWAY; the proxy's own answers carry a `Date`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use h2::{Reason, RecvStream};
use http::{Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::support::mesh::{service, snapshot};
use crate::support::Proxy;

/// What the upstream saw of a request body.
#[derive(Debug, PartialEq)]
enum Seen {
    Data(Bytes),
    Reset(Option<Reason>),
    End,
}

struct Upstream {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl Upstream {
    /// `answer_first`: send the response head at once and echo the body as it
    /// comes, like a bidirectional gRPC stream; otherwise never answer.
    async fn start(answer_first: bool) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, tx.clone(), answer_first));
            }
        });
        Upstream { addr, seen }
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(10), self.seen.recv())
            .await
            .expect("the upstream saw something within 10 s")
            .expect("upstream running")
    }
}

async fn serve(socket: TcpStream, tx: mpsc::UnboundedSender<Seen>, answer_first: bool) {
    let Ok(mut connection) = h2::server::handshake(socket).await else {
        return;
    };
    while let Some(Ok((request, mut respond))) = connection.accept().await {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut echo = match answer_first {
                true => respond.send_response(Response::new(()), false).ok(),
                false => None,
            };
            let mut body: RecvStream = request.into_body();
            loop {
                let seen = match body.data().await {
                    Some(Ok(data)) => {
                        let _ = body.flow_control().release_capacity(data.len());
                        if let Some(echo) = echo.as_mut() {
                            let _ = echo.send_data(data.clone(), false);
                        }
                        Seen::Data(data)
                    }
                    Some(Err(error)) => Seen::Reset(error.reason()),
                    None => {
                        if let Some(echo) = echo.as_mut() {
                            let _ = echo.send_data(Bytes::new(), true);
                        }
                        Seen::End
                    }
                };
                let last = !matches!(seen, Seen::Data(_));
                let _ = tx.send(seen);
                if last {
                    return;
                }
            }
        });
    }
}

async fn proxy_to(name: &str, upstream: &Upstream) -> (Proxy, h2::client::SendRequest<Bytes>) {
    let svc = service(name, "http2").endpoint(upstream.addr);
    let flag = format!("shop/{name}=127.0.0.1:0");
    let proxy = Proxy::start(snapshot(&[svc]), &["--upstream", &flag]).await;
    let stream = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(stream).await.expect("handshake");
    tokio::spawn(connection);
    (proxy, client)
}

#[tokio::test]
async fn a_request_dropped_by_its_client_resets_the_upstream_stream() {
    let mut upstream = Upstream::start(false).await;
    let (_proxy, client) = proxy_to("h2-dropped", &upstream).await;
    let mut client = client.ready().await.expect("ready");
    let request = Request::post("http://h2-dropped.shop/upload")
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("sent");
    body.send_data(Bytes::from_static(b"first part"), false)
        .expect("data");
    assert_eq!(upstream.next().await, Seen::Data("first part".into()));

    // The client gives up before any answer: h2 resets a stream whose handles
    // are all dropped, and so must the proxy upstream.
    drop((response, body));
    assert_eq!(upstream.next().await, Seen::Reset(Some(Reason::CANCEL)));
}

#[tokio::test]
async fn a_bidirectional_stream_flows_until_the_client_resets_it() {
    let mut upstream = Upstream::start(true).await;
    let (_proxy, client) = proxy_to("h2-bidi", &upstream).await;
    let mut client = client.ready().await.expect("ready");
    let request = Request::post("http://h2-bidi.shop/chat")
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("sent");
    // The head arrives while the request body is still open.
    let response = response.await.expect("response head");
    assert_eq!(response.status(), StatusCode::OK);
    let mut replies = response.into_body();

    for message in ["ping 1", "ping 2", "ping 3"] {
        body.send_data(Bytes::from(message), false).expect("data");
        assert_eq!(upstream.next().await, Seen::Data(message.into()));
        let echoed = replies.data().await.expect("echo").expect("echo data");
        let _ = replies.flow_control().release_capacity(echoed.len());
        assert_eq!(echoed, message);
    }

    // The client's body fails: the upstream stream is reset with the client's
    // reason, not left open.
    body.send_reset(Reason::INTERNAL_ERROR);
    assert_eq!(
        upstream.next().await,
        Seen::Reset(Some(Reason::INTERNAL_ERROR))
    );
}

#[tokio::test]
async fn a_drain_lets_an_open_stream_finish_then_closes_the_connection() {
    let mut upstream = Upstream::start(true).await;
    let (proxy, client) = proxy_to("h2-drain", &upstream).await;
    let mut client = client.ready().await.expect("ready");
    let request = Request::post("http://h2-drain.shop/chat")
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("sent");
    let mut replies = response.await.expect("response head").into_body();
    body.send_data(Bytes::from("before"), false).expect("data");
    assert_eq!(upstream.next().await, Seen::Data("before".into()));

    let drained = tokio::spawn(proxy.shutdown());
    // The test runtime has one thread: after one yield the drain task has run
    // and signalled, before the rest of this stream has crossed the proxy.
    tokio::task::yield_now().await;
    // The stream open when the drain began is served on, to its end.
    body.send_data(Bytes::from("after"), true).expect("data");
    assert_eq!(upstream.next().await, Seen::Data("after".into()));
    assert_eq!(upstream.next().await, Seen::End);
    let mut echoed = Vec::new();
    while let Some(data) = replies.data().await {
        let data = data.expect("echo data");
        let _ = replies.flow_control().release_capacity(data.len());
        echoed.extend_from_slice(&data);
    }
    assert_eq!(echoed, b"beforeafter");
    // Then the connection closes and the drain completes (within its own limit).
    drained.await.expect("drained");
}

#[tokio::test]
async fn a_client_breaking_the_protocol_gets_goaway_and_others_are_served() {
    let mut upstream = Upstream::start(true).await;
    let (proxy, client) = proxy_to("h2-broken", &upstream).await;

    let mut broken = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
    bytes.extend_from_slice(&[0, 0, 1, 0, 0, 0, 0, 0, 0, b'x']); // DATA on stream 0
    broken.write_all(&bytes).await.expect("write");
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), broken.read_to_end(&mut received))
        .await
        .expect("the proxy closed the connection within 10 s")
        .expect("read");
    assert_eq!(goaway_code(&received), Some(1), "GOAWAY PROTOCOL_ERROR");

    // The proxy serves on.
    let mut client = client.ready().await.expect("ready");
    let request = Request::post("http://h2-broken.shop/chat")
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("sent");
    let response = response.await.expect("response head");
    assert_eq!(response.status(), StatusCode::OK);
    body.send_data(Bytes::from("still here"), true)
        .expect("data");
    assert_eq!(upstream.next().await, Seen::Data("still here".into()));
}

/// The error code of the first GOAWAY frame among HTTP/2 frames.
fn goaway_code(mut frames: &[u8]) -> Option<u32> {
    while frames.len() >= 9 {
        let length = u32::from_be_bytes([0, frames[0], frames[1], frames[2]]) as usize;
        let payload = frames.get(9..9 + length)?;
        if frames[3] == 0x7 && payload.len() >= 8 {
            return Some(u32::from_be_bytes([
                payload[4], payload[5], payload[6], payload[7],
            ]));
        }
        frames = &frames[9 + length..];
    }
    None
}

#[tokio::test]
async fn an_idle_connection_gets_goaway_after_the_idle_timeout() {
    let mut upstream = Upstream::start(true).await;
    let svc = service("h2-idle", "http2")
        .endpoint(upstream.addr)
        .with(|s| {
            s.timeouts = Some(weft_proto::v1::Timeouts {
                idle_ms: 200,
                ..Default::default()
            })
        });
    let proxy = Proxy::start(
        snapshot(&[svc]),
        &["--upstream", "shop/h2-idle=127.0.0.1:0"],
    )
    .await;
    let stream = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(stream).await.expect("handshake");
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = Request::get("http://h2-idle.shop/")
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("sent");
    let mut body = response.await.expect("response head").into_body();
    assert_eq!(upstream.next().await, Seen::End);
    while let Some(data) = body.data().await {
        data.expect("body");
    }
    // Then nothing: the proxy says GOAWAY and closes, which ends the client's
    // connection (held open by `client`, so only the proxy can end it).
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the idle connection was closed within 5 s")
        .expect("connection task")
        .expect("closed gracefully");
    drop(client);
}

#[tokio::test]
async fn the_proxys_own_answers_carry_a_date() {
    let mut sick = Upstream::start(true).await;
    let svc = service("h2-sick", "http2").unhealthy(sick.addr);
    let proxy = Proxy::start(
        snapshot(&[svc]),
        &["--upstream", "shop/h2-sick=127.0.0.1:0"],
    )
    .await;
    let stream = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(stream).await.expect("handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = Request::get("http://h2-sick.shop/")
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("sent");
    let response = response.await.expect("response head");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(response.headers().contains_key("weft-proxy-error"));
    let date = response.headers()["date"].to_str().expect("ascii date");
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    assert!(
        sick.seen.try_recv().is_err(),
        "the unhealthy endpoint got nothing"
    );
}
