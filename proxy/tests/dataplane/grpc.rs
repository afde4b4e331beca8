//! gRPC through two proxies, client side then server side, with a Python grpcio
//! server and client (generic handlers over raw bytes, so no generated stubs):
//! unary, server streaming, a non-OK status with trailing metadata, and the
//! proxy's own UNAVAILABLE for a service without endpoints.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::mesh::{service, snapshot};
use crate::support::{recorder, require, run, sample, Proxy};

const SCRIPT: &str = r#"
import json, sys
from concurrent import futures
import grpc

SERVICE = "weft.test.Echo"
OPTIONS = [("grpc.enable_http_proxy", 0)]

def unary(request, context):
    if request == b"fail":
        context.set_trailing_metadata((("x-reason", "asked-to-fail"),))
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    context.set_trailing_metadata((("x-served-by", "python"),))
    return b"echo:" + request

def stream(request, context):
    for i in range(int(request.decode())):
        yield ("item-%06d;" % i).encode() * 100

def serve():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    }),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()

def client(target, empty_target):
    out = {}
    with grpc.insecure_channel(target, options=OPTIONS) as channel:
        call_unary = channel.unary_unary("/%s/Unary" % SERVICE)
        response, call = call_unary.with_call(b"hello", timeout=10)
        out["unary"] = response.decode()
        out["unary_trailers"] = dict(call.trailing_metadata())
        try:
            call_unary(b"fail", timeout=10)
            out["fail"] = "no error"
        except grpc.RpcError as e:
            out["fail"] = {"code": e.code().name, "details": e.details(),
                           "trailers": dict(e.trailing_metadata() or ())}
        items = list(channel.unary_stream("/%s/Stream" % SERVICE)(b"2000", timeout=30))
        out["stream_count"] = len(items)
        out["stream_bytes"] = sum(len(i) for i in items)
        out["stream_last"] = items[-1][:12].decode()
    with grpc.insecure_channel(empty_target, options=OPTIONS) as channel:
        try:
            channel.unary_unary("/%s/Unary" % SERVICE)(b"x", timeout=10)
            out["empty"] = "no error"
        except grpc.RpcError as e:
            out["empty"] = e.code().name
    print(json.dumps(out), flush=True)

if sys.argv[1] == "serve":
    serve()
else:
    client(sys.argv[2], sys.argv[3])
"#;

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
