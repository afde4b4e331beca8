//! Opaque TCP through the proxy: byte-exact large transfers with half-close,
//! passthrough of captured non-mesh connections, and connect failover.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::mesh::{service, snapshot};
use crate::support::upstream::{closed_port, tcp_echo};
use crate::support::{recorder, sample, Proxy};

/// Writes `data`, half-closes, and reads until the peer closes; reading runs
/// alongside writing so neither side's buffers fill up and stall the other.
async fn echo_through(stream: TcpStream, data: &[u8]) -> Vec<u8> {
    let (mut read, mut write) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut received = Vec::new();
        read.read_to_end(&mut received).await.expect("read back");
        received
    });
    write.write_all(data).await.expect("write");
    write.shutdown().await.expect("half-close");
    reader.await.expect("reader")
}

fn payload(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::Rng::fill(&mut rand::rng(), data.as_mut_slice());
    data
}

#[tokio::test]
async fn a_large_payload_and_half_close_cross_byte_for_byte() {
    let echo = tcp_echo().await;
    let svc = service("tcp-echo", "tcp").endpoint(echo);
    let proxy = Proxy::start(
        snapshot(&[svc]),
        &["--upstream", "shop/tcp-echo=127.0.0.1:0"],
    )
    .await;
    let data = payload(16 * 1024 * 1024);
    let stream = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    let received = echo_through(stream, &data).await;
    assert_eq!(received.len(), data.len());
    assert!(received == data, "the echoed bytes differ");
}

#[tokio::test]
async fn captured_connections_to_non_mesh_addresses_pass_through_and_are_counted() {
    let echo = tcp_echo().await;
    let proxy = Proxy::start(snapshot(&[]), &[]).await;
    let before = passthrough_count();
    // Binary first bytes: detection calls it opaque at once.
    let data = [&[0u8, 1, 2, 3][..], &payload(100_000)].concat();
    let stream = proxy.connect_captured(echo).await;
    assert!(echo_through(stream, &data).await == data);
    assert!(passthrough_count() > before);
}

fn passthrough_count() -> f64 {
    let text = recorder().render();
    sample(&text, "weft_outbound_passthrough_connections_total", &[]).unwrap_or(0.0)
}

#[tokio::test]
async fn a_captured_virtual_ip_of_a_tcp_service_is_balanced() {
    let echo = tcp_echo().await;
    let dead = closed_port().await;
    let svc = service("tcp-vip", "tcp")
        .virtual_ip("10.96.0.9")
        .policy("round_robin")
        .endpoint(dead)
        .endpoint(echo);
    let proxy = Proxy::start(snapshot(&[svc]), &[]).await;
    let vip: SocketAddr = "10.96.0.9:80".parse().expect("addr");
    // Every connection lands on the live endpoint: a refused connect moves on.
    for _ in 0..6 {
        let stream = proxy.connect_captured(vip).await;
        assert_eq!(echo_through(stream, b"ping").await, b"ping");
    }
}
