//! Metrics on a live admin `/metrics`: counters match the traffic sent, and the
//! exposition passes `promtool check metrics`.

use std::process::Stdio;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::admin::{self, Admin};
use weft_proxy::drain::Drain;

use crate::support::mesh::{service, snapshot};
use crate::support::upstream::{closed_port, tcp_echo, HttpUpstream};
use crate::support::{recorder, require, run, sample, Client, Proxy};

#[tokio::test]
async fn live_metrics_count_the_traffic_and_pass_promtool() {
    let curl = require("curl", "curl");
    let promtool = require("promtool", "prometheus");
    let a = HttpUpstream::start("a").await;
    let echo = tcp_echo().await;
    let web = service("metrics-web", "http1").endpoint(a.addr);
    let down = service("metrics-down", "http1").endpoint(closed_port().await);
    let raw = service("metrics-tcp", "tcp").endpoint(echo);
    let proxy = Proxy::start(
        snapshot(&[web.clone(), down, raw]),
        &[
            "--upstream",
            "shop/metrics-web=127.0.0.1:0",
            "--upstream",
            "shop/metrics-down=127.0.0.1:0",
            "--upstream",
            "shop/metrics-tcp=127.0.0.1:0",
        ],
    )
    .await;

    let mut client = Client::connect(proxy.upstreams[0]).await;
    for _ in 0..7 {
        assert_eq!(client.get("x", "/").await.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(client.get("x", "/status/503").await.status, 503);
    }
    drop(client);
    let mut client = Client::connect(proxy.upstreams[1]).await;
    assert_eq!(client.get("x", "/").await.status, 502);
    drop(client);
    let mut stream = TcpStream::connect(proxy.upstreams[2])
        .await
        .expect("connect");
    stream.write_all(b"0123456789").await.expect("write");
    stream.shutdown().await.expect("half-close");
    let mut back = Vec::new();
    stream.read_to_end(&mut back).await.expect("read");
    assert_eq!(back, b"0123456789");
    drop(stream);

    // The live endpoint: the admin server over the process's recorder.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    let admin_addr = listener.local_addr().expect("addr");
    let (shutdown, _rx) = tokio::sync::mpsc::channel(1);
    let admin = Arc::new(Admin {
        shared: proxy.shared.clone(),
        metrics: recorder().clone(),
        shutdown,
    });
    let drain = Drain::new();
    tokio::spawn(admin::serve(listener, admin, drain.watch()));
    let url = format!("http://{admin_addr}/metrics");

    fn labels(service: &str) -> Vec<(&'static str, &str)> {
        vec![("direction", "outbound"), ("service", service)]
    }
    let text = wait_for_metrics(&curl, &url, |text| {
        // Connections are counted closed when both sides finished.
        sample(
            text,
            "weft_tcp_connections_closed_total",
            &labels("shop/metrics-tcp"),
        ) == Some(1.0)
            && sample(
                text,
                "weft_tcp_connections_closed_total",
                &labels("shop/metrics-web"),
            ) == Some(1.0)
    })
    .await;
    let web_labels = labels("shop/metrics-web");
    assert_eq!(
        sample(&text, "weft_requests_total", &web_labels),
        Some(10.0)
    );
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut l = web_labels.clone();
        l.extend_from_slice(extra);
        l
    };
    assert_eq!(
        sample(
            &text,
            "weft_responses_total",
            &with(&[("status_code", "200"), ("grpc_status", "")])
        ),
        Some(7.0)
    );
    assert_eq!(
        sample(
            &text,
            "weft_responses_total",
            &with(&[("status_code", "503")])
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "weft_request_duration_seconds_count", &web_labels),
        Some(10.0)
    );
    let down = labels("shop/metrics-down");
    assert_eq!(
        sample(
            &text,
            "weft_request_errors_total",
            &[down.clone(), vec![("error", "connect")]].concat()
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "weft_responses_total",
            &[down, vec![("status_code", "502")]].concat()
        ),
        Some(1.0)
    );
    let tcp = labels("shop/metrics-tcp");
    assert_eq!(
        sample(&text, "weft_tcp_connections_opened_total", &tcp),
        Some(1.0)
    );
    assert_eq!(sample(&text, "weft_tcp_connections_open", &tcp), Some(0.0));
    assert_eq!(
        sample(&text, "weft_tcp_received_bytes_total", &tcp),
        Some(10.0)
    );
    assert_eq!(sample(&text, "weft_tcp_sent_bytes_total", &tcp), Some(10.0));
    assert_eq!(
        sample(
            &text,
            "weft_endpoints",
            &[("service", "shop/metrics-web"), ("state", "healthy")]
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &text,
            "weft_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ) == Some(1.0)
    );

    // promtool reads the exposition from stdin.
    let mut check = tokio::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    let mut stdin = check.stdin.take().expect("stdin");
    stdin
        .write_all(text.as_bytes())
        .await
        .expect("feed promtool");
    drop(stdin);
    let output = check.wait_with_output().await.expect("promtool output");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Fetches `/metrics` until `ready` holds (polled, with a deadline).
async fn wait_for_metrics(
    curl: &std::path::PathBuf,
    url: &str,
    ready: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = run(curl, &["-sS", "--fail", url]).await;
        if ready(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics did not settle:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
