//! gRPC through two proxies, client side then server side, with a Python grpcio
//! server and client (generic handlers over raw bytes, so no generated stubs):
//! unary, server streaming, a non-OK status with trailing metadata, and the
//! proxy's own UNAVAILABLE for a service without endpoints.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::mesh::{service, snapshot};
use crate::support::{recorder, require, run, sample, Proxy};

/// Shared with the end-to-end tests (tests/tests/authz.rs).
const SCRIPT: &str = include_str!("../../../tests/scripts/grpc_echo.py");

#[tokio::test]
async fn grpcio_unary_streaming_and_errors_cross_two_proxies() {
    let python = require("python3", "python3 (with `pip install grpcio`)");
    let check = tokio::process::Command::new(&python)
        .args(["-c", "import grpc"])
        .output()
        .await
        .expect("run python3");
    assert!(
        check.status.success(),
        "the Python `grpcio` package is missing (pip install grpcio): {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("echo.py");
    std::fs::write(&script, SCRIPT).expect("write script");
    let script = script.display().to_string();

    let mut server = tokio::process::Command::new(&python)
        .args([&script, "serve"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python server");
    let stdout = server.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("the Python server printed its port")
    .expect("read the port");
    let app = format!("127.0.0.1:{}", line.trim());

    // Server side: its inbound listener delivers to the app (h2 detected).
    let server_proxy = Proxy::start(snapshot(&[]), &["--inbound-forward", &app]).await;
    // Client side: an explicit listener for the gRPC service, whose endpoint is
    // the server-side proxy's inbound listener.
    let echo = service("grpc-echo", "grpc").endpoint(server_proxy.inbound);
    let empty = service("grpc-empty", "grpc");
    let client_proxy = Proxy::start(
        snapshot(&[echo, empty]),
        &[
            "--upstream",
            "shop/grpc-echo=127.0.0.1:0",
            "--upstream",
            "shop/grpc-empty=127.0.0.1:0",
        ],
    )
    .await;

    let target = client_proxy.upstreams[0].to_string();
    let empty_target = client_proxy.upstreams[1].to_string();
    let out = run(&python, &[&script, "client", &target, &empty_target]).await;
    let out: serde_json::Value = serde_json::from_str(out.trim()).expect("client JSON");
    assert_eq!(out["unary"], "echo:hello", "{out}");
    assert_eq!(out["unary_trailers"]["x-served-by"], "python", "{out}");
    assert_eq!(out["fail"]["code"], "NOT_FOUND", "{out}");
    assert_eq!(out["fail"]["details"], "no such thing", "{out}");
    assert_eq!(
        out["fail"]["trailers"]["x-reason"], "asked-to-fail",
        "{out}"
    );
    assert_eq!(out["stream_count"], 2000, "{out}");
    assert_eq!(out["stream_bytes"], 2000 * 1200, "{out}");
    assert_eq!(out["stream_last"], "item-001999;", "{out}");
    assert_eq!(out["empty"], "UNAVAILABLE", "{out}");

    // The client-side proxy read each call's gRPC status.
    let text = recorder().render();
    let labels = |status: &'static str| {
        vec![
            ("direction", "outbound"),
            ("service", "shop/grpc-echo"),
            ("status_code", "200"),
            ("grpc_status", status),
        ]
    };
    assert_eq!(
        sample(&text, "weft_responses_total", &labels("0")),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "weft_responses_total", &labels("5")),
        Some(1.0),
        "{text}"
    );
    let unavailable = [
        ("direction", "outbound"),
        ("service", "shop/grpc-empty"),
        ("grpc_status", "14"),
    ];
    assert_eq!(
        sample(&text, "weft_responses_total", &unavailable),
        Some(1.0),
        "{text}"
    );
}
