//! The upstream side of HTTP/2 forwarding, against an upstream on the `h2` crate
//! that misbehaves on purpose: a silent upstream is given up after the response
//! inactivity timeout (504), one that stalls mid-body has its stream reset while
//! the client's stream is reset too, a stream whose client keeps sending is not
//! idle however quiet the upstream, and a client that resets its own upload is
//! counted as the client's failure, not the upstream's.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::Reason;
use http::{Request, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::support::mesh::{service, snapshot};
use crate::support::{recorder, sample, wait_until, Client, Proxy};

#[derive(Clone, Copy)]
enum Behaviour {
    /// Takes the request and never answers.
    Silent,
    /// Answers a head and `abc`, then sends nothing more.
    Stall,
    /// Answers a head, then reads the request body without a word.
    Listen,
}

/// What the upstream saw of a stream.
#[derive(Debug, PartialEq)]
enum Seen {
    Opened,
    Reset(Reason),
}

/// An HTTP/2 upstream that reports each stream it gets and each reset the proxy
/// sent on it.
struct Upstream {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl Upstream {
    async fn start(behaviour: Behaviour) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Ok(mut connection) = h2::server::handshake(socket).await else {
                        return;
                    };
                    while let Some(Ok((request, mut respond))) = connection.accept().await {
                        let tx = tx.clone();
                        let _ = tx.send(Seen::Opened);
                        tokio::spawn(async move {
                            let mut request = request.into_body();
                            let reason = match behaviour {
                                Behaviour::Silent => poll_fn(|cx| respond.poll_reset(cx)).await,
                                Behaviour::Stall => {
                                    let head = Response::new(());
                                    let Ok(mut body) = respond.send_response(head, false) else {
                                        return;
                                    };
                                    let _ = body.send_data(Bytes::from_static(b"abc"), false);
                                    poll_fn(|cx| body.poll_reset(cx)).await
                                }
                                Behaviour::Listen => {
                                    let Ok(mut body) =
                                        respond.send_response(Response::new(()), false)
                                    else {
                                        return;
                                    };
                                    while let Some(Ok(data)) = request.data().await {
                                        let _ = request.flow_control().release_capacity(data.len());
                                    }
                                    poll_fn(|cx| body.poll_reset(cx)).await
                                }
                            };
                            if let Ok(reason) = reason {
                                let _ = tx.send(Seen::Reset(reason));
                            }
                        });
                    }
                });
            }
        });
        Upstream { addr, seen }
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(5), self.seen.recv())
            .await
            .expect("the upstream saw something within 5 s")
            .expect("upstream running")
    }
}

async fn proxy_to(name: &str, upstream: &Upstream) -> Proxy {
    let svc = service(name, "http2").endpoint(upstream.addr);
    let flag = format!("shop/{name}=127.0.0.1:0");
    let args = ["--upstream", &flag, "--response-idle-timeout-ms", "300"];
    Proxy::start(snapshot(&[svc]), &args).await
}

async fn h2_client(proxy: &Proxy) -> h2::client::SendRequest<Bytes> {
    let stream = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(stream).await.expect("handshake");
    tokio::spawn(connection);
    client.ready().await.expect("ready")
}

fn errors(service: &str, error: &str) -> Option<f64> {
    let service = format!("shop/{service}");
    sample(
        &recorder().render(),
        "weft_request_errors_total",
        &[("service", &service), ("error", error)],
    )
}

#[tokio::test]
async fn a_silent_http2_upstream_gets_its_client_a_504_and_its_stream_reset() {
    let mut upstream = Upstream::start(Behaviour::Silent).await;
    let proxy = proxy_to("h2-silent", &upstream).await;
    let mut client = Client::connect(proxy.upstreams[0]).await;
    let started = Instant::now();
    let reply = client.get("h2-silent.shop", "/").await;
    assert_eq!(upstream.next().await, Seen::Opened);
    let waited = started.elapsed();
    assert_eq!(reply.status, 504, "{reply:?}");
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert_eq!(errors("h2-silent", "timeout"), Some(1.0));
    assert_eq!(upstream.next().await, Seen::Reset(Reason::CANCEL));
}

#[tokio::test]
async fn an_http2_upstream_stalling_mid_body_gets_both_streams_reset() {
    let mut upstream = Upstream::start(Behaviour::Stall).await;
    let proxy = proxy_to("h2-stall", &upstream).await;
    let mut client = h2_client(&proxy).await;
    let request = Request::get("http://h2-stall.shop/")
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("sent");
    let response = response.await.expect("response head");
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.next().await, Seen::Opened);
    let mut body = response.into_body();
    let first = body.data().await.expect("data").expect("the first bytes");
    assert_eq!(first, "abc");
    let started = Instant::now();
    let cut = tokio::time::timeout(Duration::from_secs(5), body.data())
        .await
        .expect("the stream ends within 5 s");
    let waited = started.elapsed();
    let error = match cut {
        Some(Err(error)) => error,
        other => panic!("the stream ended without a reset: {other:?}"),
    };
    assert_eq!(error.reason(), Some(Reason::INTERNAL_ERROR), "{error}");
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert_eq!(upstream.next().await, Seen::Reset(Reason::CANCEL));
}

#[tokio::test]
async fn a_client_resetting_its_upload_is_the_clients_failure() {
    let mut upstream = Upstream::start(Behaviour::Silent).await;
    let proxy = proxy_to("h2-client-reset", &upstream).await;
    let mut client = h2_client(&proxy).await;
    let request = Request::post("http://h2-client-reset.shop/upload")
        .body(())
        .expect("request");
    let (_response, mut body) = client.send_request(request, false).expect("sent");
    body.send_data(Bytes::from_static(b"part"), false)
        .expect("data");
    assert_eq!(upstream.next().await, Seen::Opened);
    body.send_reset(Reason::CANCEL);
    assert_eq!(upstream.next().await, Seen::Reset(Reason::CANCEL));
    wait_until(
        "the reset to count as the client's",
        Duration::from_secs(5),
        || async { errors("h2-client-reset", "client") == Some(1.0) },
    )
    .await;
    assert_eq!(errors("h2-client-reset", "upstream"), None);
}

#[tokio::test]
async fn a_stream_is_not_idle_while_its_client_sends_and_is_once_both_sides_are_quiet() {
    let mut upstream = Upstream::start(Behaviour::Listen).await;
    let proxy = proxy_to("h2-listen", &upstream).await;
    let mut client = h2_client(&proxy).await;
    let request = Request::post("http://h2-listen.shop/stream")
        .body(())
        .expect("request");
    let (response, mut sending) = client.send_request(request, false).expect("sent");
    let response = response.await.expect("response head");
    assert_eq!(upstream.next().await, Seen::Opened);
    let mut body = response.into_body();
    let cut = tokio::spawn(async move {
        let ended = body.data().await;
        (Instant::now(), ended.map(|r| r.is_err()))
    });
    // A message every 100 ms for 600 ms, twice the timeout, the last one ending
    // the request; the upstream says nothing all along.
    for last in [false, false, false, false, false, true] {
        sending
            .send_data(Bytes::from_static(b"message"), last)
            .expect("data");
        if !last {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let last_sent = Instant::now();
    assert!(!cut.is_finished(), "cut while the client was sending");
    let (at, ended) = tokio::time::timeout(Duration::from_secs(5), cut)
        .await
        .expect("cut once both sides went quiet")
        .expect("reader");
    assert_eq!(ended, Some(true), "reset, not ended");
    assert!(
        at - last_sent >= Duration::from_millis(300),
        "{:?}",
        at - last_sent
    );
    assert_eq!(upstream.next().await, Seen::Reset(Reason::CANCEL));
}
