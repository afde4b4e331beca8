//! The client against scripted servers on real sockets: the bytes it writes,
//! the responses it reads, and when it gives its connection back.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::super::body::{Buffered, ReceivedBody, RequestBody};
use super::head::{encode_request, parse_chunk_size, parse_response, Framing, Sending};
use super::{exchange, Connection, Error, Refusal};
use crate::dataplane::endpoint::Endpoint;
use crate::dataplane::io::Conn;

/// The response inactivity timeout of tests that do not test it.
const IDLE: Duration = Duration::from_secs(60);

/// A server on `127.0.0.1:0` and the endpoint whose pool the client uses.
async fn server() -> (TcpListener, Arc<Endpoint>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = Endpoint::new(listener.local_addr().expect("local address"), None, 1, 8);
    (listener, endpoint)
}

async fn connect(endpoint: &Endpoint) -> Box<Connection> {
    let stream = TcpStream::connect(endpoint.address).await.expect("connect");
    Connection::new(Conn::Plain(stream), None)
}

fn get(path: &str) -> Request<RequestBody> {
    Request::get(path)
        .header("host", "svc")
        .body(RequestBody::Buffered(Buffered::default()))
        .expect("request")
}

fn post(path: &str, body: Bytes, trailers: Option<HeaderMap>) -> Request<RequestBody> {
    Request::post(path)
        .header("host", "svc")
        .body(RequestBody::Buffered(Buffered::new(body, trailers)))
        .expect("request")
}

async fn send(
    connection: Box<Connection>,
    request: Request<RequestBody>,
    endpoint: &Arc<Endpoint>,
) -> Response<ReceivedBody> {
    match exchange(connection, request, endpoint, IDLE).await {
        Ok(response) => response,
        Err(Refusal::Unsent(_, e) | Refusal::Sent(e)) => panic!("exchange failed: {e}"),
    }
}

/// Reads one request head (through its blank line) from `stream`.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.expect("read"),
            1,
            "closed mid-head"
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("utf-8")
}

/// Reads until `stream` holds `want` more bytes.
async fn read_exact(stream: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; want];
    stream.read_exact(&mut bytes).await.expect("read");
    bytes
}

/// Serves one connection: reads a request head, writes `answer`, then closes
/// (`close`) or holds the connection until the client closes it.
fn answer_once(listener: TcpListener, answer: &'static [u8], close: bool) {
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        read_head(&mut stream).await;
        stream.write_all(answer).await.expect("write");
        if !close {
            let _ = stream.read(&mut [0u8; 1]).await;
        }
    });
}

async fn body_of(response: Response<ReceivedBody>) -> Bytes {
    let collected = response.into_body().collect().await.expect("body");
    collected.to_bytes()
}

#[tokio::test]
async fn a_response_with_a_length_is_read_and_its_connection_reused() {
    let (listener, endpoint) = server().await;
    let served = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut heads = Vec::new();
        for body in ["first", "second!"] {
            heads.push(read_head(&mut stream).await);
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-n: 1\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).await.expect("write");
        }
        heads
    });
    let response = send(connect(&endpoint).await, get("/a?b=c"), &endpoint).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-n"], "1");
    let body = body_of(response).await;
    assert_eq!(body, "first");

    let pooled = endpoint
        .clients
        .http1
        .checkout()
        .expect("connection back in the pool");
    let response = send(pooled, get("/next"), &endpoint).await;
    let body = body_of(response).await;
    assert_eq!(body, "second!");
    let heads = served.await.expect("server task");
    assert_eq!(heads[0], "GET /a?b=c HTTP/1.1\r\nhost: svc\r\n\r\n");
    assert!(
        heads[1].starts_with("GET /next HTTP/1.1\r\n"),
        "{}",
        heads[1]
    );
    assert_eq!(endpoint.clients.http1.idle_count(), 1);
}

#[tokio::test]
async fn a_chunked_response_arrives_whole_with_its_trailers() {
    let (listener, endpoint) = server().await;
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        read_head(&mut stream).await;
        // Split mid-size-line and mid-data, as a slow server would send it.
        for piece in [
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
            "lo\r\n1",
            "0;ext=1\r\n0123456789abcdef\r\n0\r\nx-checksum: ab",
            "c\r\n\r\n",
        ] {
            stream.write_all(piece.as_bytes()).await.expect("write");
            stream.flush().await.expect("flush");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = stream.read(&mut [0u8; 1]).await;
    });
    let response = send(connect(&endpoint).await, get("/"), &endpoint).await;
    let collected = response.into_body().collect().await.expect("body");
    assert_eq!(collected.trailers().expect("trailers")["x-checksum"], "abc");
    assert_eq!(collected.to_bytes(), "hello0123456789abcdef");
    assert_eq!(endpoint.clients.http1.idle_count(), 1);
}

#[tokio::test]
async fn a_body_until_close_is_read_to_its_end_and_the_connection_not_pooled() {
    let (listener, endpoint) = server().await;
    answer_once(listener, b"HTTP/1.1 200 OK\r\n\r\nall of it", true);
    let response = send(connect(&endpoint).await, get("/"), &endpoint).await;
    let body = body_of(response).await;
    assert_eq!(body, "all of it");
    assert_eq!(endpoint.clients.http1.idle_count(), 0);
}

#[tokio::test]
async fn connection_close_and_http_1_0_responses_are_not_pooled() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"[..],
        &b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"[..],
    ] {
        let (listener, endpoint) = server().await;
        answer_once(listener, answer, false);
        let response = send(connect(&endpoint).await, get("/"), &endpoint).await;
        let body = body_of(response).await;
        assert_eq!(body, "ok");
        assert_eq!(endpoint.clients.http1.idle_count(), 0);
    }
}

#[tokio::test]
async fn interim_responses_are_skipped_and_head_responses_have_no_body() {
    let (listener, endpoint) = server().await;
    let answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
    answer_once(listener, answer, false);
    let request = Request::head("/")
        .body(RequestBody::Buffered(Buffered::default()))
        .expect("request");
    let response = send(connect(&endpoint).await, request, &endpoint).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "5");
    assert!(hyper::body::Body::is_end_stream(response.body()));
    drop(response);
    assert_eq!(endpoint.clients.http1.idle_count(), 1);
}

#[tokio::test]
async fn a_request_body_is_sent_with_its_length_or_chunked_with_trailers() {
    let (listener, endpoint) = server().await;
    let served = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let first = read_head(&mut stream).await;
        let first_body = read_exact(&mut stream, 5).await;
        stream
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .expect("write");
        let second = read_head(&mut stream).await;
        let second_body =
            read_exact(&mut stream, "5\r\nhello\r\n0\r\nx-sum: 1\r\n\r\n".len()).await;
        stream
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .expect("write");
        (first, first_body, second, second_body)
    });
    let response = send(
        connect(&endpoint).await,
        post("/", Bytes::from_static(b"hello"), None),
        &endpoint,
    )
    .await;
    assert_eq!(response.status(), 204);
    drop(response);
    let mut trailers = HeaderMap::new();
    trailers.insert("x-sum", "1".parse().expect("parse"));
    // Trailers make the length unknown in advance (a length cannot carry them).
    let request = post("/t", Bytes::from_static(b"hello"), Some(trailers));
    let pooled = endpoint
        .clients
        .http1
        .checkout()
        .expect("pooled after a 204");
    let response = send(pooled, request, &endpoint).await;
    assert_eq!(response.status(), 204);
    let (first, first_body, second, second_body) = served.await.expect("server task");
    assert!(first.contains("content-length: 5\r\n"), "{first}");
    assert_eq!(first_body, b"hello");
    assert!(
        second.contains("transfer-encoding: chunked\r\n"),
        "{second}"
    );
    assert_eq!(second_body, b"5\r\nhello\r\n0\r\nx-sum: 1\r\n\r\n");
}

#[tokio::test]
async fn an_early_answer_stops_the_upload_and_the_connection_is_not_reused() {
    let (listener, endpoint) = server().await;
    // Held by the test: the server keeps its end open until the test ends.
    let (_hold, held) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        read_head(&mut stream).await;
        // Answers without reading the body, and keeps the connection open.
        stream
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n")
            .await
            .expect("write");
        let _ = held.await;
        drop(stream);
    });
    // Far more than the socket buffers take: the write blocks until the answer.
    let large = Bytes::from(vec![b'x'; 64 * 1024 * 1024]);
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        send(connect(&endpoint).await, post("/", large, None), &endpoint),
    )
    .await
    .expect("the answer arrives while the body is still being written");
    assert_eq!(response.status(), 413);
    drop(response);
    assert_eq!(endpoint.clients.http1.idle_count(), 0);
}

#[tokio::test]
async fn a_malformed_response_or_an_early_close_fails_the_exchange() {
    for (answer, expected) in [
        (&b"HTTP/1.1 abc OK\r\n\r\n"[..], "malformed response"),
        (
            &b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n"[..],
            "Content-Length",
        ),
        (&b""[..], "closed before the response head"),
    ] {
        let (listener, endpoint) = server().await;
        answer_once(listener, answer, true);
        match exchange(connect(&endpoint).await, get("/"), &endpoint, IDLE).await {
            Err(Refusal::Sent(error)) => {
                assert!(error.to_string().contains(expected), "{error}")
            }
            Err(Refusal::Unsent(_, error)) => panic!("reported unsent: {error}"),
            Ok(response) => panic!("accepted {:?}", response.status()),
        }
    }
}

#[tokio::test]
async fn a_body_cut_short_is_an_error_and_its_connection_is_dropped() {
    let (listener, endpoint) = server().await;
    answer_once(
        listener,
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        true,
    );
    let response = send(connect(&endpoint).await, get("/"), &endpoint).await;
    let error = response
        .into_body()
        .collect()
        .await
        .expect_err("a body cut short fails");
    assert!(
        error
            .to_string()
            .contains("before the end of the response body"),
        "{error}"
    );
    assert_eq!(endpoint.clients.http1.idle_count(), 0);
}

#[tokio::test]
async fn an_idle_connection_the_peer_closed_is_not_handed_out() {
    let (listener, endpoint) = server().await;
    let (close, closed) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        read_head(&mut stream).await;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .expect("write");
        let _ = closed.await;
    });
    drop(send(connect(&endpoint).await, get("/"), &endpoint).await);
    let mut pooled = endpoint.clients.http1.checkout().expect("pooled");
    assert!(pooled.usable());
    close.send(()).expect("signal");
    // Wait for the peer's FIN to arrive, then the pool refuses the connection.
    tokio::time::timeout(Duration::from_secs(5), async {
        while pooled.usable() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the close is seen");
    endpoint.clients.http1.checkin(pooled);
    assert!(endpoint.clients.http1.checkout().is_none());
}

#[test]
fn a_request_head_names_its_framing() {
    // Method, the body's known length, a Content-Length header, the framing
    // header written, and how the body goes.
    type Case = (
        Method,
        Option<u64>,
        Option<&'static str>,
        &'static str,
        Sending,
    );
    let cases: [Case; 5] = [
        (Method::GET, Some(0), None, "", Sending::Empty),
        (
            Method::POST,
            Some(0),
            None,
            "content-length: 0\r\n",
            Sending::Empty,
        ),
        (
            Method::PUT,
            Some(7),
            None,
            "content-length: 7\r\n",
            Sending::Length(7),
        ),
        (
            Method::POST,
            None,
            None,
            "transfer-encoding: chunked\r\n",
            Sending::Chunked,
        ),
        (
            Method::POST,
            None,
            Some("9"),
            "content-length: 9\r\n",
            Sending::Length(9),
        ),
    ];
    for (method, known, length, framing, sending) in cases {
        let mut request = Request::builder()
            .method(method.clone())
            .uri("http://svc/p");
        if let Some(length) = length {
            request = request.header("content-length", length);
        }
        let (parts, ()) = request.body(()).expect("request").into_parts();
        let (head, got) = encode_request(&parts, known, &mut BytesMut::new()).expect("encode");
        let head = std::str::from_utf8(&head).expect("utf-8");
        assert_eq!(got, sending, "{method} {known:?}");
        assert_eq!(
            head,
            format!("{method} /p HTTP/1.1\r\n{framing}\r\n"),
            "{method} {known:?}"
        );
    }
    let (parts, ()) = Request::post("/")
        .header("content-length", "x")
        .body(())
        .expect("request")
        .into_parts();
    assert!(matches!(
        encode_request(&parts, None, &mut BytesMut::new()),
        Err(Error::RequestLength)
    ));
}

#[tokio::test]
async fn an_echo_that_answers_while_the_body_is_sent_gets_all_of_it() {
    let (listener, endpoint) = server().await;
    const SIZE: usize = 8 * 1024 * 1024;
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        read_head(&mut stream).await;
        // The head first, then each piece of the body back as a chunk as it is read.
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .expect("write");
        let mut left = SIZE;
        let mut piece = vec![0u8; 64 * 1024];
        while left > 0 {
            let n = stream
                .read(&mut piece[..left.min(64 * 1024)])
                .await
                .expect("read");
            assert!(n > 0, "closed mid-body");
            left -= n;
            stream
                .write_all(format!("{n:x}\r\n").as_bytes())
                .await
                .expect("write");
            stream.write_all(&piece[..n]).await.expect("write");
            stream.write_all(b"\r\n").await.expect("write");
        }
        stream.write_all(b"0\r\n\r\n").await.expect("write");
        let _ = stream.read(&mut [0u8; 1]).await;
    });
    let sent: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let request = post("/echo", Bytes::from(sent.clone()), None);
    let response = send(connect(&endpoint).await, request, &endpoint).await;
    let echoed = tokio::time::timeout(Duration::from_secs(20), response.into_body().collect())
        .await
        .expect("the echo ends")
        .expect("body")
        .to_bytes();
    assert!(echoed == sent, "the echo differs from what was sent");
    // Sent to its end, answered to its end: the connection is good for another.
    assert_eq!(endpoint.clients.http1.idle_count(), 1);
}

/// A small body goes out with its head; a connection that fails before a byte
/// of the request is out gives the request back with that body whole, so that
/// another connection can send it.
#[tokio::test]
async fn a_request_refused_before_a_byte_went_keeps_its_inlined_body() {
    let (listener, endpoint) = server().await;
    let stream = TcpStream::connect(endpoint.address).await.expect("connect");
    let (accepted, _) = listener.accept().await.expect("accept");
    // Closed with a reset: the client's first write fails.
    socket2::SockRef::from(&accepted)
        .set_linger(Some(Duration::ZERO))
        .expect("linger");
    drop(accepted);
    let mut probe = [0u8; 1];
    let _ = stream.peek(&mut probe).await;
    let connection = Connection::new(Conn::Plain(stream), None);
    let request = post("/", Bytes::from_static(b"hello"), None);
    let returned = match exchange(connection, request, &endpoint, IDLE).await {
        Err(Refusal::Unsent(request, _)) => request,
        Err(Refusal::Sent(error)) => panic!("reported sent: {error}"),
        Ok(response) => panic!("answered: {}", response.status()),
    };
    let body = returned.into_body();
    assert_eq!(body.size_hint().exact(), Some(5));
    let collected = body.collect().await.expect("body").to_bytes();
    assert_eq!(collected, Bytes::from_static(b"hello"));
}

#[test]
fn chunk_sizes_are_read_strictly() {
    for (line, size) in [
        (&b"5\r\n"[..], 5),
        (b"00A\r\n", 10),
        (b"0\r\n", 0),
        // Extensions, after optional spaces or tabs (RFC 9112 section 7.1.1).
        (b"5;name=value\r\n", 5),
        (b"5 ; name = \"v\"\r\n", 5),
        (b"5\t;x\r\n", 5),
    ] {
        let parsed = parse_chunk_size(line).expect("accepted");
        assert_eq!(parsed, Some((size, line.len())), "{line:?}");
    }
    for line in [
        &b" 5\r\n"[..],
        b"\x0c5\r\n",
        b"5\r\r\n",
        b"5 \r\n",
        b"5\n",
        b"\r\n",
        b";x\r\n",
        b"0x5\r\n",
        b"5;a\x01b\r\n",
        b"1000000000000000\r\n",
    ] {
        assert!(parse_chunk_size(line).is_err(), "{line:?} accepted");
    }
    assert!(matches!(parse_chunk_size(b"5;ext"), Ok(None)));
}

#[test]
fn equal_content_lengths_collapse_into_one_and_differing_ones_fail() {
    let mut buf =
        BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 005\r\n\r\n"[..]);
    let head = parse_response(&mut buf, &mut Vec::new(), false)
        .expect("parsed")
        .expect("complete");
    assert_eq!(head.framing, Framing::Length(5));
    let lengths: Vec<_> = head.headers.get_all("content-length").iter().collect();
    assert_eq!(lengths, ["5"]);
    let mut buf =
        BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"[..]);
    let parsed = parse_response(&mut buf, &mut Vec::new(), false);
    assert!(matches!(parsed, Err(Error::ResponseLength)));
}

#[test]
fn a_head_over_the_limit_fails_even_when_it_is_complete() {
    let mut head = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    head.resize(head.len() + 65 * 1024, b'a');
    head.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
    let parsed = parse_response(&mut BytesMut::from(&head[..]), &mut Vec::new(), false);
    assert!(matches!(parsed, Err(Error::HeadTooLarge)));
}

/// Serves one connection: reads a request head, writes `pieces` `pause` apart,
/// then waits for the client to close and reports it.
fn serve_paced(
    listener: TcpListener,
    pieces: &'static [&'static [u8]],
    pause: Duration,
) -> tokio::sync::oneshot::Receiver<()> {
    let (closed, on_close) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        read_head(&mut stream).await;
        for piece in pieces {
            stream.write_all(piece).await.expect("write");
            tokio::time::sleep(pause).await;
        }
        while stream.read(&mut [0u8; 64]).await.is_ok_and(|n| n > 0) {}
        let _ = closed.send(());
    });
    on_close
}

#[tokio::test]
async fn a_silent_upstream_fails_the_exchange_after_the_idle_timeout() {
    let (listener, endpoint) = server().await;
    let closed = serve_paced(listener, &[], Duration::ZERO);
    let idle = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let result = exchange(connect(&endpoint).await, get("/"), &endpoint, idle).await;
    let waited = started.elapsed();
    assert!(matches!(result, Err(Refusal::Sent(Error::Idle(after))) if after == idle));
    assert!(
        waited >= idle && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the connection is closed")
        .expect("server running");
}

#[tokio::test]
async fn a_body_that_stalls_fails_after_the_idle_timeout_and_its_connection_is_closed() {
    let (listener, endpoint) = server().await;
    let closed = serve_paced(
        listener,
        &[b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"],
        Duration::ZERO,
    );
    let idle = Duration::from_millis(200);
    let request = exchange(connect(&endpoint).await, get("/"), &endpoint, idle);
    let Ok(response) = request.await else {
        panic!("the head arrived");
    };
    let error = response
        .into_body()
        .collect()
        .await
        .expect_err("a stalled body fails");
    assert!(error.to_string().contains("sent nothing"), "{error}");
    assert_eq!(endpoint.clients.http1.idle_count(), 0);
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the connection is closed")
        .expect("server running");
}

#[tokio::test]
async fn a_slow_body_that_keeps_moving_is_not_cut() {
    let (listener, endpoint) = server().await;
    // Six pieces 100 ms apart: the whole takes longer than the timeout, no
    // single wait does.
    let _closed = serve_paced(
        listener,
        &[
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            b"a",
            b"b",
            b"c",
            b"d",
            b"e",
        ],
        Duration::from_millis(100),
    );
    let idle = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let request = exchange(connect(&endpoint).await, get("/"), &endpoint, idle);
    let Ok(response) = request.await else {
        panic!("the head arrived");
    };
    assert_eq!(body_of(response).await, Bytes::from_static(b"abcde"));
    assert!(started.elapsed() > idle, "the test proves nothing");
}
