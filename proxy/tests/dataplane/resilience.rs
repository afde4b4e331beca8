//! Client-side resilience in process: request and gRPC deadlines answered by the
//! proxy, retries of failing responses on another endpoint, the circuit breaker,
//! locality preference with spill-over, and the downstream idle timeout.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use weft_proto::v1;

use crate::support::mesh::{service, snapshot};
use crate::support::upstream::HttpUpstream;
use crate::support::{wait_until, Client, Proxy};

#[tokio::test]
async fn a_request_past_its_timeout_gets_504() {
    let slow = HttpUpstream::start_slow("slow", Duration::from_secs(5)).await;
    let web = service("timeout", "http1").endpoint(slow.addr).with(|s| {
        s.timeouts = Some(v1::Timeouts {
            request_ms: 100,
            ..Default::default()
        })
    });
    let proxy = Proxy::start(
        snapshot(&[web]),
        &["--upstream", "shop/timeout=127.0.0.1:0"],
    )
    .await;
    let mut client = Client::connect(proxy.upstreams[0]).await;
    let reply = client.get("x", "/").await;
    assert_eq!(reply.status, 504, "{reply:?}");
    assert!(reply.headers.contains_key("weft-proxy-error"));
}

#[tokio::test]
async fn a_grpc_client_deadline_gets_deadline_exceeded() {
    let slow = HttpUpstream::start_slow("slow", Duration::from_secs(5)).await;
    let rpc = service("deadline", "grpc").endpoint(slow.addr);
    let proxy = Proxy::start(
        snapshot(&[rpc]),
        &["--upstream", "shop/deadline=127.0.0.1:0"],
    )
    .await;
    let mut client = Client::connect(proxy.upstreams[0]).await;
    let request = Request::post("/pkg.Svc/Call")
        .header("host", "deadline.shop")
        .header("content-type", "application/grpc")
        .header("grpc-timeout", "100m")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = client.send(request).await.expect("response");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["grpc-status"], "4", "{reply:?}");
}

/// A proxy for `shop/<name>` balancing round robin over two upstreams, "good" and
/// "bad" (which answers 503 to `/fail-if/bad`), retrying 5xx; outlier detection is
/// off so that only retries are under test. The upstreams are returned to be kept
/// alive for the test's duration.
async fn retrying_good_and_bad(name: &str) -> (HttpUpstream, HttpUpstream, Proxy) {
    let good = HttpUpstream::start("good").await;
    let bad = HttpUpstream::start("bad").await;
    let web = service(name, "http1")
        .policy("round_robin")
        .endpoint(good.addr)
        .endpoint(bad.addr)
        .with(|s| {
            s.retries = Some(v1::Retries {
                retry_on: vec!["5xx".into()],
                ..Default::default()
            });
            s.outlier_detection = Some(v1::OutlierDetection {
                consecutive_failures: Some(0),
                ..Default::default()
            });
        });
    let upstream = format!("shop/{name}=127.0.0.1:0");
    let proxy = Proxy::start(snapshot(&[web]), &["--upstream", &upstream]).await;
    (good, bad, proxy)
}

#[tokio::test]
async fn a_failing_response_is_retried_on_another_endpoint() {
    let (_good, _bad, proxy) = retrying_good_and_bad("retry").await;
    let mut client = Client::connect(proxy.upstreams[0]).await;
    // Round robin sends every other request to "bad", which answers 503.
    for _ in 0..10 {
        let reply = client.get("x", "/fail-if/bad").await;
        assert_eq!((reply.status, reply.upstream()), (200, "good"), "{reply:?}");
    }
}

#[tokio::test]
async fn a_post_is_retried_only_when_marked_retryable() {
    let (_good, _bad, proxy) = retrying_good_and_bad("post").await;
    let mut client = Client::connect(proxy.upstreams[0]).await;
    let post = |marked: bool| {
        let mut request = Request::post("/fail-if/bad").header("host", "x");
        if marked {
            request = request.header("weft-retryable", "true");
        }
        request
            .body(Full::new(Bytes::from(vec![7u8; 10_000])))
            .expect("request")
    };
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(client.send(post(false)).await.expect("reply").status);
    }
    // Not idempotent, not marked: the bad endpoint's 503 reaches the client.
    assert!(statuses.contains(&503), "{statuses:?}");
    for _ in 0..4 {
        let reply = client.send(post(true)).await.expect("reply");
        assert_eq!((reply.status, reply.upstream()), (200, "good"), "{reply:?}");
    }
}

#[tokio::test]
async fn the_circuit_breaker_refuses_beyond_max_requests() {
    let slow = HttpUpstream::start_slow("slow", Duration::from_millis(500)).await;
    let web = service("breaker", "http1").endpoint(slow.addr).with(|s| {
        s.circuit_breakers = Some(v1::CircuitBreakers {
            max_requests: 1,
            ..Default::default()
        })
    });
    let proxy = Proxy::start(
        snapshot(&[web]),
        &["--upstream", "shop/breaker=127.0.0.1:0"],
    )
    .await;
    let addr = proxy.upstreams[0];
    let first = tokio::spawn(async move { Client::connect(addr).await.get("x", "/").await });
    wait_until(
        "the first request to be in flight",
        Duration::from_secs(5),
        || async { slow.requests.load(std::sync::atomic::Ordering::SeqCst) == 1 },
    )
    .await;
    let refused = Client::connect(addr).await.get("x", "/").await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(first.await.expect("first").status, 200);
}

#[tokio::test]
async fn traffic_stays_in_the_zone_and_spills_over_when_it_runs_short() {
    let near = HttpUpstream::start("near").await;
    let far = HttpUpstream::start("far").await;
    let gone = HttpUpstream::start("gone").await;
    let zones = |near_healthy: bool| {
        service("local", "http1")
            .policy("round_robin")
            .located(near.addr, ("eu", "eu-1a"), near_healthy)
            .located(gone.addr, ("eu", "eu-1a"), false)
            .located(far.addr, ("us", "us-1a"), true)
    };
    let args = [
        "--upstream",
        "shop/local=127.0.0.1:0",
        "--service",
        "caller",
        "--workload-address",
        "127.0.0.1",
        "--workload-port",
        "8080",
        "--region",
        "eu",
        "--zone",
        "eu-1a",
    ];
    let proxy = Proxy::start(snapshot(&[zones(true)]), &args).await;
    let mut client = Client::connect(proxy.upstreams[0]).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..20 {
        *seen
            .entry(client.get("x", "/").await.upstream().to_owned())
            .or_default() += 1;
    }
    // One of two zone endpoints is down: 50% < 70%, so far ones help...
    assert!(seen.contains_key("far"), "{seen:?}");
    assert!(!seen.contains_key("gone"), "{seen:?}");
    // ...and with both up again, the zone keeps its traffic.
    proxy.publish(snapshot(&[service("local", "http1")
        .policy("round_robin")
        .located(near.addr, ("eu", "eu-1a"), true)
        .located(gone.addr, ("eu", "eu-1a"), true)
        .located(far.addr, ("us", "us-1a"), true)]));
    wait_until(
        "traffic to stay in the zone",
        Duration::from_secs(5),
        || async {
            let mut client = Client::connect(proxy.upstreams[0]).await;
            let mut far_seen = false;
            for _ in 0..20 {
                far_seen |= client.get("x", "/").await.upstream() == "far";
            }
            !far_seen
        },
    )
    .await;
}

#[tokio::test]
async fn an_idle_downstream_keep_alive_connection_is_closed() {
    let a = HttpUpstream::start("a").await;
    let web = service("idle", "http1").endpoint(a.addr).with(|s| {
        s.timeouts = Some(v1::Timeouts {
            idle_ms: 200,
            ..Default::default()
        })
    });
    let proxy = Proxy::start(snapshot(&[web]), &["--upstream", "shop/idle=127.0.0.1:0"]).await;
    let mut stream = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    use tokio::io::AsyncWriteExt;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buffer = vec![0u8; 4096];
    let read = stream.read(&mut buffer).await.expect("response");
    assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
    // Then nothing: the proxy closes the connection (a read of 0 bytes).
    assert!(
        closed_by_proxy(&mut stream).await,
        "the idle connection stayed open"
    );
}

/// Reads until the proxy closes the connection (EOF or an error); false when it
/// was still open after five seconds.
async fn closed_by_proxy(stream: &mut TcpStream) -> bool {
    let mut buffer = vec![0u8; 4096];
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn a_request_head_sent_too_slowly_is_dropped_after_the_idle_timeout() {
    let a = HttpUpstream::start("a").await;
    let web = service("slow-head", "http1").endpoint(a.addr).with(|s| {
        s.timeouts = Some(v1::Timeouts {
            idle_ms: 200,
            ..Default::default()
        })
    });
    let proxy = Proxy::start(
        snapshot(&[web]),
        &["--upstream", "shop/slow-head=127.0.0.1:0"],
    )
    .await;
    let mut stream = TcpStream::connect(proxy.upstreams[0])
        .await
        .expect("connect");
    use tokio::io::AsyncWriteExt;
    // Half a head, and never the rest.
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    assert!(
        closed_by_proxy(&mut stream).await,
        "a connection that never finished its request head stayed open"
    );
    assert_eq!(a.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_response_slower_than_the_idle_timeout_still_arrives() {
    let a = HttpUpstream::start_slow("a", Duration::from_millis(600)).await;
    let web = service("slow-answer", "http1").endpoint(a.addr).with(|s| {
        s.timeouts = Some(v1::Timeouts {
            idle_ms: 200,
            ..Default::default()
        })
    });
    let proxy = Proxy::start(
        snapshot(&[web]),
        &["--upstream", "shop/slow-answer=127.0.0.1:0"],
    )
    .await;
    let mut client = Client::connect(proxy.upstreams[0]).await;
    // The exchange is open while the upstream thinks: the idle timeout does not
    // apply, on the first request or the next one on the same connection.
    assert_eq!(client.get("x", "/").await.upstream(), "a");
    assert_eq!(client.get("x", "/").await.upstream(), "a");
}

/// Echoes `payload` over a new connection through `addr`: what came back (empty
/// when the proxy closed the connection without reaching the echo server).
async fn echo_once(addr: std::net::SocketAddr, payload: &[u8]) -> Vec<u8> {
    use tokio::io::AsyncWriteExt;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    if stream.write_all(payload).await.is_err() {
        return Vec::new();
    }
    let _ = stream.shutdown().await;
    let mut back = Vec::new();
    let _ = stream.read_to_end(&mut back).await;
    back
}

#[tokio::test]
async fn a_tcp_service_refuses_connections_beyond_its_limit() {
    let echo = crate::support::upstream::tcp_echo().await;
    let l4 = service("tcp-breaker", "tcp").endpoint(echo).with(|s| {
        s.circuit_breakers = Some(v1::CircuitBreakers {
            max_connections: 1,
            ..Default::default()
        })
    });
    let proxy = Proxy::start(
        snapshot(&[l4]),
        &["--upstream", "shop/tcp-breaker=127.0.0.1:0"],
    )
    .await;
    let addr = proxy.upstreams[0];
    // The first connection is held open: it fills the limit.
    let mut held = TcpStream::connect(addr).await.expect("connect");
    {
        use tokio::io::AsyncWriteExt;
        held.write_all(b"ping").await.expect("write");
        let mut four = [0; 4];
        held.read_exact(&mut four).await.expect("echo");
        assert_eq!(&four, b"ping");
    }
    assert_eq!(echo_once(addr, b"refused").await, b"");
    let overflows = crate::support::sample(
        &crate::support::recorder().render(),
        "weft_circuit_breaker_overflows_total",
        &[("service", "shop/tcp-breaker"), ("limit", "connections")],
    );
    assert_eq!(overflows, Some(1.0));
    // Once the held connection is gone, a new one gets through again.
    drop(held);
    wait_until("the limit to free up", Duration::from_secs(5), || async {
        echo_once(addr, b"again").await == b"again"
    })
    .await;
}

#[tokio::test]
async fn a_tcp_endpoint_refusing_connections_leaves_rotation_and_connections_fail_over() {
    let echo = crate::support::upstream::tcp_echo().await;
    let dead = crate::support::upstream::closed_port().await;
    let l4 = service("tcp-outlier", "tcp")
        .policy("round_robin")
        .endpoint(dead)
        .endpoint(echo);
    let proxy = Proxy::start(
        snapshot(&[l4]),
        &["--upstream", "shop/tcp-outlier=127.0.0.1:0"],
    )
    .await;
    let addr = proxy.upstreams[0];
    for i in 0..10 {
        let payload = format!("connection {i}");
        assert_eq!(
            echo_once(addr, payload.as_bytes()).await,
            payload.as_bytes()
        );
    }
    let text = crate::support::recorder().render();
    let series = |name| crate::support::sample(&text, name, &[("service", "shop/tcp-outlier")]);
    // Refused once: out of rotation at once (no threshold of failures in a row),
    // not tried again while it refuses, and not an ejection.
    assert_eq!(
        series("weft_endpoint_unreachable_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        series("weft_outlier_ejections_total").unwrap_or(0.0),
        0.0,
        "{text}"
    );
}
