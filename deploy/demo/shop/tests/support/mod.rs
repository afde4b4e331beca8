//! What the shop's integration tests share: the built binary as child processes,
//! `:0` ports, polling with a deadline, and a recording relay that stands where a
//! sidecar would and keeps every request head it forwards.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SHOP: &str = env!("CARGO_BIN_EXE_weft-shop");

/// A child process killed when the test ends, whatever happens.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Sends SIGTERM, the way the demo's orchestrator stops a service.
    pub fn terminate(&self) {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut status = None;
        wait_for("the process to exit", timeout, || {
            status = self.0.try_wait().expect("try_wait");
            status.is_some()
        });
        status.expect("exited")
    }
}

/// Starts `weft-shop ARGS` (stdout discarded; its log goes to the test's stderr).
pub fn start(args: &[&str]) -> Proc {
    let child = Command::new(SHOP)
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("weft-shop starts");
    Proc(child)
}

/// Starts a `weft-shop` server (`ARGS` without `--listen`) on a port of its own choosing
/// and returns it with the address it printed once bound.
pub fn start_server(args: &[&str]) -> (Proc, SocketAddr) {
    let mut child = Command::new(SHOP)
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("weft-shop starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let proc = Proc(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read weft-shop's stdout");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("weft-shop {args:?} did not say where it listens: {line:?}"));
    (proc, addr)
}

/// Starts `weft-shop ARGS` with its log (stderr) piped to the test.
pub fn start_logged(args: &[&str]) -> Proc {
    let child = Command::new(SHOP)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weft-shop starts");
    Proc(child)
}

/// A fresh path for a summary file (the tests run in parallel in one process).
pub fn summary_path() -> std::path::PathBuf {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let name = format!("weft-shop-test-{}-{run}.json", std::process::id());
    std::env::temp_dir().join(name)
}

/// Reads and removes a summary file.
pub fn read_summary(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("summary written");
    let _ = std::fs::remove_file(path);
    serde_json::from_str(&text).expect("summary is JSON")
}

/// A port nothing listens on right now (bind `:0`, let go).
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind :0");
    listener.local_addr().expect("bound address")
}

pub fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// Polls `condition` until it holds, failing the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP/1.1 relay to `target` that records each request head (lowercased), to see
/// what a sidecar in that place would see.
pub struct Relay {
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Relay {
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind :0");
        let addr = listener.local_addr().expect("bound address");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = heads.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let recorded = recorded.clone();
                std::thread::spawn(move || {
                    // A broken connection is the client's to report, not the relay's.
                    let _ = relay(client, target, &recorded);
                });
            }
        });
        Relay { addr, heads }
    }

    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("not poisoned").clone()
    }
}

/// Forwards the requests of one client connection, each on its own upstream connection
/// (asked to close, so the response ends at EOF).
fn relay(client: TcpStream, target: SocketAddr, heads: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let recorded = head.to_ascii_lowercase();
        let length = recorded
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        heads.lock().expect("not poisoned").push(recorded);

        let mut upstream = TcpStream::connect(target)?;
        let forwarded: String = head
            .lines()
            .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        write!(upstream, "{forwarded}connection: close\r\n\r\n")?;
        upstream.write_all(&body)?;
        let mut response = Vec::new();
        upstream.read_to_end(&mut response)?;
        client.write_all(&response)?;
    }
}

/// One HTTP/1.1 request on its own connection, the way curl would send it: the status
/// and the body as JSON (`Null` when empty).
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
    };
    (status, json)
}
