//! Starting the mesh's real binaries for a test: a control plane on a free port with
//! its own data directory, proxies with free admin/inbound/outbound ports (with a mesh
//! identity from a join token when asked), weftctl, and small applications to put
//! behind them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::{bin, free_port, http_get, loopback, wait_for, Proc};

pub struct ControlPlane {
    pub proc: Proc,
    pub port: u16,
    pub data_dir: PathBuf,
}

/// How often a start is tried on fresh ports before the test gives up.
const PORT_ATTEMPTS: usize = 5;

/// Whether a process's log says it could not bind a port that was taken.
fn port_taken(log: &str) -> bool {
    log.contains("Address already in use")
}

impl ControlPlane {
    /// Starts `weft-control-plane` and waits until it serves. If `port` turns out to
    /// be taken (another process bound it after [`free_port`] checked it), it starts
    /// again on another free port: read the port back from the result.
    pub fn start(logs: &Path, data_dir: &Path, port: u16, extra: &[&str]) -> ControlPlane {
        let mut port = port;
        for _ in 0..PORT_ATTEMPTS {
            let mut command = Command::new(bin("weft-control-plane"));
            command
                .arg("--listen")
                .arg(loopback(port).to_string())
                .arg("--data-dir")
                .arg(data_dir)
                .args(extra);
            let mut proc = Proc::spawn(&format!("control-plane-{port}"), &mut command, logs);
            // Its own log line, not a connection, says it serves: a connection could
            // reach another process that holds the port.
            let started = wait_for(
                "the control plane to serve",
                Duration::from_secs(20),
                || {
                    if proc.log_text().contains("control plane serving") {
                        return Some(true);
                    }
                    if proc.is_running() {
                        return None;
                    }
                    let log = proc.log_text();
                    assert!(port_taken(&log), "the control plane exited: {log}");
                    Some(false)
                },
            );
            if started {
                return ControlPlane {
                    proc,
                    port,
                    data_dir: data_dir.to_owned(),
                };
            }
            port = free_port();
        }
        panic!("no free port for the control plane after {PORT_ATTEMPTS} attempts");
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

pub struct Proxy {
    pub proc: Proc,
    pub node_id: String,
    pub admin: SocketAddr,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
}

impl Proxy {
    /// Starts `weft-proxy` with free ports; `extra` adds flags (workload, upstreams...).
    pub fn start(logs: &Path, node_id: &str, control_plane: &str, extra: &[&str]) -> Proxy {
        Proxy::start_on(logs, node_id, control_plane, None, extra)
    }

    /// Like [`Proxy::start`] with a chosen inbound address, for a workload that
    /// registers itself: its endpoint is this proxy's inbound listener.
    pub fn start_with_inbound(
        logs: &Path,
        node_id: &str,
        control_plane: &str,
        inbound: SocketAddr,
        extra: &[&str],
    ) -> Proxy {
        Proxy::start_on(logs, node_id, control_plane, Some(inbound), extra)
    }

    /// Starts on fresh ports (and the given inbound address, if any), again on other
    /// ports when one turned out to be taken by another process meanwhile.
    fn start_on(
        logs: &Path,
        node_id: &str,
        control_plane: &str,
        inbound: Option<SocketAddr>,
        extra: &[&str],
    ) -> Proxy {
        for _ in 0..PORT_ATTEMPTS {
            if let Some(proxy) =
                Proxy::try_start(logs, node_id, control_plane, inbound, false, extra)
            {
                return proxy;
            }
        }
        panic!("{node_id}: no free ports after {PORT_ATTEMPTS} attempts");
    }

    /// One start; `None` when a port was taken (the proxy binds every listener
    /// before `/live` answers, and exits if one is taken).
    fn try_start(
        logs: &Path,
        node_id: &str,
        control_plane: &str,
        chosen_inbound: Option<SocketAddr>,
        inbound_retryable: bool,
        extra: &[&str],
    ) -> Option<Proxy> {
        let inbound = chosen_inbound.unwrap_or_else(|| loopback(free_port()));
        let admin = loopback(free_port());
        let outbound = loopback(free_port());
        let mut command = Command::new(bin("weft-proxy"));
        command
            .arg("--control-plane")
            .arg(control_plane)
            .arg("--node-id")
            .arg(node_id)
            .arg("--admin")
            .arg(admin.to_string())
            .arg("--inbound")
            .arg(inbound.to_string())
            .arg("--outbound")
            .arg(outbound.to_string())
            .arg("--reconnect-max-ms")
            .arg("500")
            .args(extra);
        let mut proxy = Proxy {
            proc: Proc::spawn(node_id, &mut command, logs),
            node_id: node_id.to_owned(),
            admin,
            inbound,
            outbound,
        };
        let started = wait_for("the proxy's admin port", Duration::from_secs(20), || {
            if !proxy.proc.is_running() {
                let log = proxy.proc.log_text();
                // A taken inbound address chosen by the caller cannot be retried.
                let inbound_taken = log.contains(&format!("{inbound} (inbound)"));
                let retry = port_taken(&log)
                    && !(chosen_inbound.is_some() && inbound_taken && !inbound_retryable);
                assert!(retry, "{node_id} exited: {log}");
                return Some(false);
            }
            // The answer must come from this proxy, not from another on the port.
            let (status, body) = http_get(proxy.admin, "/config_dump").ok()?;
            let dump: serde_json::Value = serde_json::from_str(&body).ok()?;
            (status == 200 && dump["node_id"] == node_id).then_some(true)
        });
        started.then_some(proxy)
    }

    /// Starts a proxy whose flags name its own inbound address (a self-registered
    /// workload's endpoint): `flags` gets the inbound address of each attempt, so a
    /// taken inbound port is retried on another like the other ports.
    pub fn start_registered(
        logs: &Path,
        node_id: &str,
        control_plane: &str,
        flags: impl Fn(SocketAddr) -> Vec<String>,
    ) -> Proxy {
        for _ in 0..PORT_ATTEMPTS {
            let inbound = loopback(free_port());
            let flags = flags(inbound);
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            if let Some(proxy) =
                Proxy::try_start(logs, node_id, control_plane, Some(inbound), true, &flags)
            {
                return proxy;
            }
        }
        panic!("{node_id}: no free ports after {PORT_ATTEMPTS} attempts");
    }

    pub fn is_ready(&self) -> bool {
        matches!(http_get(self.admin, "/ready"), Ok((200, _)))
    }

    pub fn wait_ready(&self) {
        wait_for(
            &format!("{} to be ready", self.node_id),
            Duration::from_secs(20),
            || self.is_ready().then_some(()),
        );
    }

    pub fn config_dump(&self) -> serde_json::Value {
        let (status, body) = http_get(self.admin, "/config_dump").expect("GET /config_dump");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("config_dump is JSON")
    }

    pub fn metrics(&self) -> String {
        let (status, body) = http_get(self.admin, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The version of a resource in this proxy's view, if it holds it.
    pub fn version_of(&self, kind: &str, name: &str) -> Option<u64> {
        resource(&self.config_dump(), kind, name).and_then(|r| r["version"].as_u64())
    }
}

/// A resource from a config dump: `kind` is "services" or "endpoints".
pub fn resource(dump: &serde_json::Value, kind: &str, name: &str) -> Option<serde_json::Value> {
    dump["resources"][kind]
        .as_array()?
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
}

/// The addresses of a service's endpoints in a config dump, sorted.
pub fn endpoint_addresses(dump: &serde_json::Value, name: &str) -> Vec<String> {
    let mut addresses: Vec<String> = resource(dump, "endpoints", name)
        .and_then(|r| r["endpoints"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["address"].as_str().map(str::to_owned))
        .collect();
    addresses.sort();
    addresses
}

/// Runs weftctl against a control plane, with `stdin` piped in when given.
pub fn weftctl(control_plane: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(bin("weftctl"))
        .arg("--control-plane")
        .arg(control_plane)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weftctl");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .expect("write weftctl stdin");
    }
    child.wait_with_output().expect("weftctl output")
}

/// weftctl that must succeed; returns its stdout.
pub fn weftctl_ok(control_plane: &str, args: &[&str], stdin: Option<&str>) -> String {
    let output = weftctl(control_plane, args, stdin);
    assert!(
        output.status.success(),
        "weftctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The value of a Prometheus sample whose name and labels contain every `part`.
pub fn metric_value(metrics: &str, parts: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| parts.iter().all(|p| line.contains(p)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// YAML for `weftctl apply`: a service `name` in `shop` with one port, 80, of
/// `protocol` and the hostname `NAME.shop` (`spec` adds two-space indented lines to
/// its spec), and its one endpoint, the app at `addr`.
pub fn shop_service(name: &str, protocol: &str, addr: SocketAddr, spec: &str) -> String {
    format!(
        "kind: Service
metadata: {{name: {name}, namespace: shop}}
spec:
  ports: [{{port: 80, protocol: {protocol}}}]
  hostnames: [{name}.shop]
{spec}
---
kind: Endpoints
metadata: {{name: {name}, namespace: shop}}
spec:
  endpoints: [{{address: {ip}, port: {port}}}]
---
",
        ip = addr.ip(),
        port = addr.port()
    )
}

/// A running `weft-test-app` (see its source for the flags).
pub struct App {
    pub proc: Proc,
    pub name: String,
    pub addr: SocketAddr,
}

impl App {
    /// Starts the app on a free port with `extra` flags and waits until it listens.
    pub fn start(logs: &Path, name: &str, extra: &[&str]) -> App {
        App::start_on(logs, name, loopback(free_port()), extra)
    }

    /// Like [`App::start`] on a chosen address (to bring a killed app back).
    pub fn start_on(logs: &Path, name: &str, addr: SocketAddr, extra: &[&str]) -> App {
        let mut command = Command::new(bin("weft-test-app"));
        command
            .args(["--listen", &addr.to_string(), "--name", name])
            .args(extra);
        let mut proc = Proc::spawn(name, &mut command, logs);
        wait_for(
            &format!("{name} to listen"),
            Duration::from_secs(20),
            || {
                assert!(proc.is_running(), "{name} exited: {}", proc.log_text());
                proc.log_text().contains("listening on").then_some(())
            },
        );
        App {
            proc,
            name: name.to_owned(),
            addr,
        }
    }
}

/// A client proxy with an explicit listener on a free port for `service`
/// (`namespace/name`), via `--upstream`; `extra` adds flags. Returns the proxy and
/// that listener's address.
pub fn client_proxy(
    logs: &Path,
    control_plane: &str,
    node_id: &str,
    service: &str,
    extra: &[&str],
) -> (Proxy, SocketAddr) {
    let listen = loopback(free_port());
    let upstream = format!("{service}={listen}");
    let mut flags = vec!["--upstream", upstream.as_str()];
    flags.extend_from_slice(extra);
    (Proxy::start(logs, node_id, control_plane, &flags), listen)
}

/// A server-side "pod": a `weft-test-app` behind its own proxy, which registers the
/// workload (its inbound listener) as an endpoint of `namespace/service`.
pub struct Pod {
    pub app: App,
    pub proxy: Proxy,
}

impl Pod {
    /// Starts the app, then its proxy with `--inbound-forward` to it; `proxy_extra`
    /// adds proxy flags (drain timings, ...), `app_extra` app flags.
    pub fn start(
        logs: &Path,
        control_plane: &str,
        service: &str,
        name: &str,
        app_extra: &[&str],
        proxy_extra: &[&str],
    ) -> Pod {
        let (namespace, service) = service.split_once('/').unwrap_or(("default", service));
        let app = App::start(logs, name, app_extra);
        let forward = app.addr.to_string();
        let proxy =
            Proxy::start_registered(logs, &format!("{name}-proxy"), control_plane, |inbound| {
                let mut flags = vec!["--namespace".to_owned(), namespace.to_owned()];
                flags.extend(workload_flags(service, inbound, &forward));
                flags.extend(proxy_extra.iter().map(|s| s.to_string()));
                flags
            });
        Pod { app, proxy }
    }

    /// The endpoint other proxies see for this pod: `127.0.0.1:<inbound port>`.
    pub fn endpoint(&self) -> String {
        self.proxy.inbound.to_string()
    }
}

/// The endpoints of a service in a config dump as `address -> health`.
pub fn endpoint_health(
    dump: &serde_json::Value,
    name: &str,
) -> std::collections::BTreeMap<String, String> {
    resource(dump, "endpoints", name)
        .and_then(|r| r["endpoints"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| {
            Some((
                e["address"].as_str()?.to_owned(),
                e["health"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// Issues a join token for `namespace`/`account` and writes it to a file, for
/// `--identity-token-file`.
pub fn token_file(cp: &ControlPlane, dir: &Path, namespace: &str, account: &str) -> PathBuf {
    let secret = join_token(cp, namespace, account, &[]);
    let path = dir.join(format!("{namespace}-{account}.token"));
    std::fs::write(&path, secret).expect("write token");
    path
}

/// Issues a join token for `namespace`/`account` with `weftctl token create` and
/// returns the secret, trimmed; `extra` adds flags (`--ttl 1s`, ...).
pub fn join_token(cp: &ControlPlane, namespace: &str, account: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "token",
        "create",
        "--namespace",
        namespace,
        "--service-account",
        account,
    ];
    args.extend_from_slice(extra);
    weftctl_ok(&cp.address(), &args, None).trim().to_owned()
}

/// The flags that make a proxy front a workload: register its `inbound` listener
/// as an endpoint of `service` (a name within the proxy's `--namespace`) and
/// forward inbound traffic to `forward` (the app's address).
pub fn workload_flags(service: &str, inbound: SocketAddr, forward: &str) -> Vec<String> {
    [
        "--service",
        service,
        "--workload-address",
        "127.0.0.1",
        "--workload-port",
        &inbound.port().to_string(),
        "--inbound-forward",
        forward,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A proxy with a mesh identity (`namespace`/`account`, from a fresh join token).
/// With `workload = Some((service, app))` it fronts that app: it registers its
/// inbound listener as an endpoint of `service` and forwards inbound traffic to
/// `app`. `extra` adds flags (`--upstream` for a client).
pub fn identified_proxy(
    cp: &ControlPlane,
    dir: &Path,
    node_id: &str,
    (namespace, account): (&str, &str),
    workload: Option<(&str, SocketAddr)>,
    extra: &[&str],
) -> Proxy {
    let token = token_file(cp, dir, namespace, account);
    let token = token.to_str().expect("utf-8 path").to_owned();
    let mut args: Vec<String> = [
        "--namespace",
        namespace,
        "--service-account",
        account,
        "--identity-token-file",
        &token,
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let Some((service, app)) = workload else {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        return Proxy::start(dir, node_id, &cp.address(), &args);
    };
    let inbound = loopback(free_port());
    args.extend(workload_flags(service, inbound, &app.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proxy::start_with_inbound(dir, node_id, &cp.address(), inbound, &args)
}

/// shop/orders with one HTTP/1 port and STRICT mTLS: the service
/// [`orders_and_frontend`] serves and calls.
pub const ORDERS_STRICT: &str = r#"
kind: Service
metadata: {name: orders, namespace: shop}
spec:
  ports: [{port: 80, protocol: http1}]
  mtls: STRICT
"#;

/// The two identified proxies of an mTLS test: `orders-1` (identity shop/orders)
/// in front of `app` as an endpoint of shop/orders, and `frontend-1` (identity
/// shop/frontend) with a listener for shop/orders.
/// Returns the server, the client and the client's listener once both are ready
/// and the client sees the server's identity (until then its endpoint has none,
/// and a PERMISSIVE server would rightly be reached in plaintext).
pub fn orders_and_frontend(
    cp: &ControlPlane,
    dir: &Path,
    app: SocketAddr,
) -> (Proxy, Proxy, SocketAddr) {
    let server = identified_proxy(
        cp,
        dir,
        "orders-1",
        ("shop", "orders"),
        Some(("orders", app)),
        &[],
    );
    let listen = loopback(free_port());
    let upstream = format!("shop/orders={listen}");
    let client = identified_proxy(
        cp,
        dir,
        "frontend-1",
        ("shop", "frontend"),
        None,
        &["--upstream", &upstream],
    );
    server.wait_ready();
    client.wait_ready();
    wait_for_identity(
        &client,
        "shop/orders",
        "spiffe://cluster.local/ns/shop/sa/orders",
    );
    (server, client, listen)
}

/// Waits until `proxy` holds endpoints of `service` carrying `identity` (a client
/// then dials them with mTLS).
pub fn wait_for_identity(proxy: &Proxy, service: &str, identity: &str) {
    wait_for(
        &format!("{} to see {identity} on {service}", proxy.node_id),
        Duration::from_secs(20),
        || {
            let endpoints = resource(&proxy.config_dump(), "endpoints", service)?;
            (endpoints["endpoints"][0]["identity"] == identity).then_some(())
        },
    );
}

/// A minimal HTTP/1.1 application on a free port answering every request with
/// `body`, then closing (each request is its own connection). It counts the
/// connections it accepted, so a test can tell that a refused one never arrived.
pub fn http_app(body: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind app");
    let addr = listener.local_addr().expect("app address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let Ok(clone) = stream.try_clone() else {
                    return;
                };
                let mut reader = BufReader::new(clone);
                let mut writer = stream;
                if !read_request_head(&mut reader) {
                    return;
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = writer.write_all(reply.as_bytes());
            });
        }
    });
    (addr, accepted)
}

/// Reads one HTTP/1.1 request head (up to its empty line) from `reader`; the test
/// apps' requests carry no body. False when the connection ended (or failed)
/// before a whole head arrived.
pub fn read_request_head(reader: &mut impl BufRead) -> bool {
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) if line == "\r\n" => return true,
            Ok(_) => {}
        }
    }
}

/// One HTTP/1.1 request on a fresh raw TCP connection, read to the end: what an
/// opaque (`tcp`) service returns from [`http_app`]. Empty when the connection was
/// closed without an answer.
pub fn raw_exchange(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET / HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// The root fingerprints (64 hex digits) `weftctl ca status` lists, in its order.
pub fn ca_fingerprints(cp: &ControlPlane) -> Vec<String> {
    weftctl_ok(&cp.address(), &["ca", "status"], None)
        .split_whitespace()
        .filter(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
        .collect()
}

/// A fresh key and a CSR asking for `uri`, for tests that call Identity.Certify
/// themselves.
pub fn csr(uri: &str) -> Vec<u8> {
    use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("ia5"))];
    params.serialize_request(&key).expect("csr").der().to_vec()
}

/// A minimal HTTP/1.1 application answering every request with its name; one
/// thread per connection, keep-alive honoured (the server proxy pools).
pub fn named_app(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind app");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut writer = stream;
                // One request head after another (keep-alive; these requests have no body).
                while read_request_head(&mut reader) {
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-app: {name}\r\n\r\n{name}",
                        name.len()
                    );
                    if writer.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}
