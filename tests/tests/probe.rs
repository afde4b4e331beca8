//! The HTTP/1.1 edge probe ([`weft_e2e::probe`]) against the real `weft-proxy`: an
//! `--upstream` listener for an `http1` service whose one endpoint is the probe's
//! strict recorder, configured with `--static-config`, and every case sent to it as
//! raw bytes. Each test fails listing every failing case with its bytes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use weft_e2e::probe::{self, cases, recorder::Recorder, Case, Target, Timeout, Timeouts};
use weft_e2e::{bin, free_port, http_get, loopback, wait_for, Proc};

/// Every timeout the proxy is given here: short, so the stall cases end quickly.
const TIMEOUT: Duration = Duration::from_millis(1000);

const TIMEOUTS: Timeouts = Timeouts {
    idle: TIMEOUT,
    request_body: TIMEOUT,
    response_idle: TIMEOUT,
    // A timer's own granularity and a loaded two-core host; still far below any
    // default the stalls would otherwise reach (60 s, 300 s, or never).
    margin: Duration::from_millis(1500),
};

struct Edge {
    proxy: Proc,
    target: Target,
    recorder: Recorder,
    _dir: tempfile::TempDir,
}

/// A proxy in front of a fresh recorder. Retries and outlier detection are off:
/// the probe counts what reaches the upstream, and a retry would send a request
/// twice on purpose.
fn edge(extra: &[&str]) -> Edge {
    let recorder = Recorder::start().expect("recorder");
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = format!(
        "kind: Service
metadata: {{name: web, namespace: probe}}
spec:
  ports: [{{port: 80, protocol: http1}}]
  loadBalancer: round_robin
  timeouts: {{idleMs: {idle}}}
  retries: {{maxRetries: 0}}
  outlierDetection: {{consecutiveFailures: 0}}
---
kind: Endpoints
metadata: {{name: web, namespace: probe}}
spec:
  endpoints:
    - {{address: 127.0.0.1, port: {port}}}
",
        idle = TIMEOUT.as_millis(),
        port = recorder.addr.port()
    );
    let config = dir.path().join("mesh.yaml");
    std::fs::write(&config, mesh).expect("write mesh");
    let listen = loopback(free_port());
    let admin = loopback(free_port());
    let mut command = std::process::Command::new(bin("weft-proxy"));
    command
        .arg("--static-config")
        .arg(&config)
        .args(["--workers", "1", "--log", "warn"])
        .args(["--admin", &admin.to_string()])
        .args(["--outbound", &loopback(free_port()).to_string()])
        .args(["--inbound", &loopback(free_port()).to_string()])
        .args(["--upstream", &format!("probe/web={listen}")])
        .args(extra);
    let mut proxy = Proc::spawn("weft-proxy", &mut command, dir.path());
    wait_for("the proxy's /live", Duration::from_secs(20), || {
        assert!(
            proxy.is_running(),
            "weft-proxy exited:\n{}",
            proxy.log_text()
        );
        matches!(http_get(admin, "/live"), Ok((200, _))).then_some(())
    });
    let target = Target {
        name: "weft".into(),
        addr: listen,
        live: Some(admin),
    };
    Edge {
        proxy,
        target,
        recorder,
        _dir: dir,
    }
}

/// Runs `cases` and fails with every failing one, its bytes and its problems.
fn probe(edge: &mut Edge, cases: &[Case]) {
    let outcomes = probe::run(cases, &edge.target, &edge.recorder, &TIMEOUTS, 8);
    let mut failures = Vec::new();
    for (case, outcome) in cases.iter().zip(&outcomes) {
        if !outcome.problems.is_empty() {
            let (saw, _) = probe::summary(outcome);
            let bytes = case.bytes();
            failures.push(format!(
                "{} (client saw {saw}): {}\n    bytes: {}",
                case.name,
                outcome.problems.join("; "),
                probe::escape(&bytes[..bytes.len().min(400)])
            ));
        }
    }
    failures.extend(
        probe::unattributed(&edge.recorder)
            .into_iter()
            .map(|p| format!("unattributed: {p}")),
    );
    assert!(
        edge.proxy.is_running(),
        "weft-proxy died:\n{}",
        edge.proxy.log_text()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The cases that need the request-body or upstream-response timeouts.
fn needs_body_or_response_timeout(case: &Case) -> bool {
    matches!(
        case.stall(),
        Some(Timeout::RequestBody | Timeout::ResponseIdle)
    )
}

#[test]
fn malformed_and_smuggling_cases_are_refused_or_normalised() {
    let cases: Vec<Case> = cases::all()
        .into_iter()
        .filter(|case| !needs_body_or_response_timeout(case))
        .collect();
    assert!(cases.len() >= 100, "{} cases", cases.len());
    let mut edge = edge(&[]);
    probe(&mut edge, &cases);
}

#[test]
fn stalled_bodies_and_upstreams_are_cut_off_within_the_timeouts() {
    let cases: Vec<Case> = cases::all()
        .into_iter()
        .filter(needs_body_or_response_timeout)
        .collect();
    let millis = TIMEOUT.as_millis().to_string();
    let mut edge = edge(&[
        "--request-body-timeout-ms",
        &millis,
        "--response-idle-timeout-ms",
        &millis,
    ]);
    probe(&mut edge, &cases);
}

/// The proxy's resident set, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Send and receive queues of the loopback TCP sockets, by (local, remote) port.
fn queues() -> std::collections::HashMap<(u16, u16), (u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port = |field: &str| {
        field
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (tx, rx) = fields.get(4)?.split_once(':')?;
            Some((
                (port(fields.get(1)?)?, port(fields.get(2)?)?),
                (
                    u64::from_str_radix(tx, 16).ok()?,
                    u64::from_str_radix(rx, 16).ok()?,
                ),
            ))
        })
        .collect()
}

/// Slow clients that sent part of a head and then nothing: what they cost while
/// open, and that the idle timeout closes them.
///
/// The bound: a connection whose head is incomplete may hold up to the proxy's
/// head limit (64 KiB, the own server's) in its read buffer, plus its socket and
/// task state (a few KiB); 96 KiB per connection leaves a third for allocator
/// slack. HAProxy and nginx hold 16-32 KiB per such connection. A client that
/// sends more than the limit without ending its head must be refused, not held.
#[test]
fn slow_heads_cost_bounded_memory_and_are_closed_by_the_idle_timeout() {
    const PER_CONNECTION_KIB: u64 = 96;
    let edge = edge(&[]);
    let pid = edge.proxy.pid();
    // Two kinds of slow head: one under the limit, one past it.
    for (count, size) in [(200usize, 32 * 1024usize), (100, 300 * 1024)] {
        let before = rss_kib(pid);
        let mut head = b"GET /slow HTTP/1.1\r\nHost: h.test\r\nX-Pad: ".to_vec();
        head.resize(size, b'p');
        let mut clients: Vec<TcpStream> = (0..count)
            .map(|_| {
                let stream = TcpStream::connect(edge.target.addr).expect("connect");
                stream.set_nonblocking(true).expect("nonblocking");
                stream
            })
            .collect();
        let mut sent = vec![0usize; count];

        // Everything sent and read by the proxy (or refused): no queue holds any of it.
        wait_for(
            "the proxy to read every partial head",
            Duration::from_secs(20),
            || {
                for (client, sent) in clients.iter_mut().zip(sent.iter_mut()) {
                    while *sent < head.len() {
                        match client.write(&head[*sent..]) {
                            Ok(n) => *sent += n,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            // Refused and closed: nothing of it is held any more.
                            Err(_) => *sent = head.len(),
                        }
                    }
                }
                let queues = queues();
                let port = edge.target.addr.port();
                clients
                    .iter()
                    .zip(&sent)
                    .all(|(client, sent)| {
                        let Ok(local) = client.local_addr() else {
                            return true;
                        };
                        let ours = queues.get(&(local.port(), port)).map_or(0, |q| q.0);
                        let theirs = queues.get(&(port, local.port())).map_or(0, |q| q.1);
                        *sent == head.len() && ours == 0 && theirs == 0
                    })
                    .then_some(())
            },
        );
        let drained = Instant::now();
        let grown = rss_kib(pid).saturating_sub(before);
        let bound = count as u64 * PER_CONNECTION_KIB;
        eprintln!(
            "{count} slow heads of {} KiB: RSS +{grown} KiB (bound {bound} KiB)",
            size / 1024
        );
        assert!(
            grown <= bound,
            "{count} slow heads of {} KiB grew the proxy's RSS by {grown} KiB, over {bound} KiB",
            size / 1024
        );
        // Then the idle timeout closes every one of them, counted from when the
        // proxy had read them all (when each read its last byte is not visible here).
        let deadline = drained + TIMEOUTS.of(Timeout::Idle);
        for client in &mut clients {
            client.set_nonblocking(false).expect("blocking");
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            client.set_read_timeout(Some(left)).expect("timeout");
            let mut sink = [0u8; 1024];
            let closed = loop {
                match client.read(&mut sink) {
                    Ok(0) => break true,
                    Ok(_) => continue,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break false
                    }
                    Err(_) => break true,
                }
            };
            assert!(
                closed,
                "a slow head of {} KiB was still open {:?} after the proxy had read it",
                size / 1024,
                drained.elapsed()
            );
        }
    }
    assert!(matches!(
        http_get(edge.target.live.expect("admin"), "/live"),
        Ok((200, _))
    ));
}
