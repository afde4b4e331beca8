//! h2c through the proxy: curl with prior knowledge, h2load, trailers in both
//! directions, a 10 MiB streamed body, and HTTP/1 clients of an HTTP/2 service.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::support::mesh::{service, snapshot};
use crate::support::upstream::HttpUpstream;
use crate::support::{require, run, Client, Proxy};

async fn h2_proxy(name: &str) -> (Proxy, HttpUpstream) {
    let a = HttpUpstream::start("a").await;
    let svc = service(name, "http2").endpoint(a.addr);
    let flag = format!("shop/{name}=127.0.0.1:0");
    let proxy = Proxy::start(snapshot(&[svc]), &["--upstream", &flag]).await;
    (proxy, a)
}

#[tokio::test]
async fn curl_prior_knowledge_and_a_10_mib_body() {
    let curl = require("curl", "curl");
    let sha = require("sha256sum", "coreutils");
    let (proxy, a) = h2_proxy("h2-curl").await;
    let root = format!("http://{}/", proxy.upstreams[0]);
    let out = run(
        &curl,
        &[
            "-sS",
            "--fail",
            "--http2-prior-knowledge",
            "-w",
            " %{http_version}",
            &root,
        ],
    )
    .await;
    assert_eq!(out, "a 2");

    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in.bin").display().to_string();
    let output = dir.path().join("out.bin").display().to_string();
    let mut data = vec![0u8; 10 * 1024 * 1024];
    rand::Rng::fill(&mut rand::rng(), data.as_mut_slice());
    std::fs::write(&input, &data).expect("write input");
    let echo = format!("http://{}/echo", proxy.upstreams[0]);
    let at_input = format!("@{input}");
    run(
        &curl,
        &[
            "-sS",
            "--fail",
            "--http2-prior-knowledge",
            "-o",
            &output,
            "--data-binary",
            &at_input,
            &echo,
        ],
    )
    .await;
    let sums = run(&sha, &[&input, &output]).await;
    let hashes: Vec<&str> = sums
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(hashes[0], hashes[1], "body changed in transit");
    // Multiplexed: one upstream connection carried everything.
    assert_eq!(a.open_connections(), 1);
}

#[tokio::test]
async fn h2load_requests_all_succeed() {
    let h2load = require("h2load", "nghttp2-client");
    let (proxy, _a) = h2_proxy("h2-load").await;
    let url = format!("http://{}/", proxy.upstreams[0]);
    let out = run(&h2load, &["-n", "4000", "-c", "4", "-m", "16", &url]).await;
    assert!(
        out.contains("4000 total, 4000 started, 4000 done, 4000 succeeded, 0 failed"),
        "{out}"
    );
    assert!(out.contains("status codes: 4000 2xx"), "{out}");
}

#[tokio::test]
async fn trailers_cross_the_proxy_both_ways() {
    let (proxy, _a) = h2_proxy("h2-trailers").await;
    let stream = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);

    // Response trailers made by the upstream.
    let request = Request::get("http://h2-trailers.shop/trailers")
        .body(body(Vec::new()))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let collected = response.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers arrived");
    assert_eq!(trailers["x-checksum"], "abc");
    assert_eq!(collected.to_bytes(), "part one, part two");

    // Request trailers, echoed back by the upstream as response trailers.
    let mut sent = HeaderMap::new();
    sent.insert("x-request-trailer", HeaderValue::from_static("yes"));
    let frames = vec![
        Frame::data(Bytes::from_static(b"payload")),
        Frame::trailers(sent),
    ];
    let request = Request::post("http://h2-trailers.shop/echo")
        .body(body(frames))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let collected = response.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("echoed trailers");
    assert_eq!(trailers["x-request-trailer"], "yes");
    assert_eq!(collected.to_bytes(), "payload");
}

type FrameStream =
    futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>>;

fn body(frames: Vec<Frame<Bytes>>) -> StreamBody<FrameStream> {
    StreamBody::new(futures::stream::iter(
        frames.into_iter().map(Ok).collect::<Vec<_>>(),
    ))
}

#[tokio::test]
async fn http1_clients_of_an_http2_service_are_translated() {
    let (proxy, a) = h2_proxy("h2-from-h1").await;
    let mut client = Client::connect(proxy.upstreams[0]).await;
    for _ in 0..3 {
        let reply = client.get("h2-from-h1.shop", "/").await;
        assert_eq!((reply.status, reply.body.as_ref()), (200, b"a".as_ref()));
    }
    assert_eq!(a.open_connections(), 1);
}
