//! Test harness for the data path: a proxy started in-process on `:0` ports with a
//! snapshot published directly (no control plane), real upstream servers (HTTP/1,
//! h2c, TCP echo), helpers to drive them, and external tools located or failed on.

pub mod mesh;
pub mod upstream;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::{TcpSocket, TcpStream};
use weft_proxy::config::{Args, Config};
use weft_proxy::dataplane::{Listeners, Settings};
use weft_proxy::drain::Drain;
use weft_proxy::snapshot::Snapshot;
use weft_proxy::state::Shared;

/// The process-wide metrics recorder (one per test binary; tests use distinct
/// service names so their counters do not mix).
pub fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| weft_proxy::metrics::install().expect("install the metrics recorder"))
}

/// Fails the test (never skips it) when an external tool is missing.
pub fn require(tool: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|path| path.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{tool}` is not installed; this test needs it (install the `{package}` package)")
    })
}

/// Original destinations by client address: what iptables would have recorded.
pub type Redirects = Arc<Mutex<HashMap<SocketAddr, SocketAddr>>>;

/// A proxy running in this process, with its listeners on loopback `:0` ports.
pub struct Proxy {
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    /// The `--upstream` listeners, in the order given.
    pub upstreams: Vec<SocketAddr>,
    pub shared: Arc<Shared>,
    pub redirects: Redirects,
    drain: Option<Drain>,
}

impl Proxy {
    /// `args` are extra proxy flags, e.g. `["--upstream", "shop/web=127.0.0.1:0"]`.
    pub async fn start(snapshot: Snapshot, args: &[&str]) -> Proxy {
        Self::start_with(snapshot, args, Settings::default()).await
    }

    pub async fn start_with(snapshot: Snapshot, args: &[&str], settings: Settings) -> Proxy {
        recorder();
        let mut argv = vec![
            "weft-proxy",
            "--outbound",
            "127.0.0.1:0",
            "--inbound",
            "127.0.0.1:0",
        ];
        argv.extend_from_slice(args);
        let config = Config::from_args(Args::parse_from(argv)).expect("valid proxy flags");
        let shared = Shared::new(config);
        shared.snapshot.send_replace(Arc::new(snapshot));
        let redirects: Redirects = Arc::default();
        let table = redirects.clone();
        let listeners = Listeners::bind(
            &shared.config.outbound,
            &shared.config.inbound,
            &shared.config.upstreams,
        )
        .await
        .expect("bind the data path")
        .with_settings(settings)
        .with_original_dst(Arc::new(move |stream: &TcpStream| {
            let peer = stream.peer_addr()?;
            let table = table.lock().expect("redirect table");
            table
                .get(&peer)
                .copied()
                .ok_or_else(|| std::io::ErrorKind::NotFound.into())
        }));
        let outbound = listeners.outbound_addr().expect("outbound addr");
        let inbound = listeners.inbound_addr().expect("inbound addr");
        let upstreams = listeners.upstream_addrs().expect("upstream addrs");
        let drain = Drain::new();
        tokio::spawn(listeners.serve(shared.clone(), drain.watch()));
        Proxy {
            outbound,
            inbound,
            upstreams,
            shared,
            redirects,
            drain: Some(drain),
        }
    }

    pub fn publish(&self, snapshot: Snapshot) {
        self.shared.snapshot.send_replace(Arc::new(snapshot));
    }

    /// Opens a connection to the outbound listener as if iptables had redirected
    /// one bound for `original`.
    pub async fn connect_captured(&self, original: SocketAddr) -> TcpStream {
        self.connect_redirected(self.outbound, original).await
    }

    /// Opens a connection to `listener` whose original destination reads `original`.
    pub async fn connect_redirected(
        &self,
        listener: SocketAddr,
        original: SocketAddr,
    ) -> TcpStream {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let local = socket.local_addr().expect("local addr");
        self.redirects
            .lock()
            .expect("redirect table")
            .insert(local, original);
        socket.connect(listener).await.expect("connect")
    }

    /// Starts draining and waits for every listener and connection to finish.
    pub async fn shutdown(mut self) {
        if let Some(mut drain) = self.drain.take() {
            drain.signal();
            tokio::time::timeout(Duration::from_secs(10), drain.wait())
                .await
                .expect("the data path drained");
        }
    }
}

/// Polls `check` every 10 ms until it is true, or fails naming `what`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A keep-alive HTTP/1.1 client on one connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

/// A response read to the end.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn upstream(&self) -> &str {
        self.headers
            .get("x-upstream")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the proxy");
        Self::over(stream).await
    }

    pub async fn over(stream: TcpStream) -> Client {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        Client { sender }
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Reply {
        let request = Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .expect("request");
        self.send(request).await.expect("response")
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Reply, hyper::Error> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        read(response).await
    }
}

pub async fn read(response: Response<hyper::body::Incoming>) -> Result<Reply, hyper::Error> {
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// Runs a command and returns its stdout, failing with its stderr if it fails.
pub async fn run(program: &PathBuf, args: &[&str]) -> String {
    let output = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    assert!(
        output.status.success(),
        "{} {args:?} failed: {}\n{}",
        program.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The value of one sample in Prometheus text, by metric name and labels.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            (metric == name).then_some((rest, value))
        })
        .find(|(rest, _)| {
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, value)| value.parse().ok())
}
