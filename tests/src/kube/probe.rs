//! Probes (startup, readiness, liveness) as the kubelet runs them, from inside the
//! pod's network namespace: httpGet (2xx/3xx passes), tcpSocket (a connect passes),
//! grpc (grpc.health.v1 answers SERVING) and exec (exit status 0); and `Schedule`, when
//! each is due and when its results in a row reach successThreshold/failureThreshold.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::netns::Netns;

const TIMEOUT: Duration = Duration::from_secs(1);

/// What a probe's results in a row add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// successThreshold successes in a row.
    Pass,
    /// failureThreshold failures in a row.
    Fail,
    /// Neither threshold reached: whatever held before still holds.
    Undecided,
}

/// When one probe of one container is next due, and its results in a row.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    /// None: not probing (no such probe, or not yet begun).
    next: Option<Instant>,
    successes: i32,
    failures: i32,
}

impl Schedule {
    /// Starts probing: the first probe at `first`, counts from zero.
    pub fn begin(&mut self, first: Instant) {
        *self = Schedule {
            next: Some(first),
            ..Schedule::default()
        };
    }

    /// Stops probing until the next `begin`.
    pub fn end(&mut self) {
        *self = Schedule::default();
    }

    pub fn due(&self, now: Instant) -> bool {
        self.next.is_some_and(|next| now >= next)
    }

    /// Counts one result; the next probe is one period (`periodSeconds`, at most `cap`)
    /// from now.
    pub fn record(&mut self, probe: &Probe, passed: bool, cap: Duration) -> Verdict {
        self.next = Some(Instant::now() + period(probe, cap));
        if passed {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= probe.success_threshold.unwrap_or(1) {
                return Verdict::Pass;
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= probe.failure_threshold.unwrap_or(3) {
                return Verdict::Fail;
            }
        }
        Verdict::Undecided
    }
}

/// `periodSeconds` (default 10), at most `cap`.
pub fn period(probe: &Probe, cap: Duration) -> Duration {
    Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64).min(cap)
}

/// `initialDelaySeconds` (default 0).
pub fn initial_delay(probe: &Probe) -> Duration {
    Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64)
}

/// Runs `probe` once against the pod at `ip` (the pod's own namespace `netns`).
pub fn run(
    probe: &Probe,
    container: &Container,
    netns: &Netns,
    ip: Ipv4Addr,
    rt: &tokio::runtime::Runtime,
) -> Result<()> {
    if let Some(http) = &probe.http_get {
        let port = port(&http.port, container)?;
        let host = http.host.as_deref().unwrap_or("");
        let path = http.path.as_deref().unwrap_or("/");
        if http
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"))
        {
            bail!("httpGet probes with scheme HTTPS are not supported by the played kubelet");
        }
        let mut stream = connect(netns, ip, host, port)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.37\r\n\
             Connection: close\r\n\r\n"
        )?;
        let mut head = [0u8; 16];
        let n = stream.read(&mut head)?;
        let line = String::from_utf8_lossy(&head[..n]);
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no HTTP status in {line:?}"))?;
        if !(200..400).contains(&status) {
            bail!("HTTP probe answered {status}");
        }
        return Ok(());
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = port(&tcp.port, container)?;
        connect(netns, ip, tcp.host.as_deref().unwrap_or(""), port)?;
        return Ok(());
    }
    if let Some(grpc) = &probe.grpc {
        let port = u16::try_from(grpc.port).context("grpc probe port")?;
        let stream = connect(netns, ip, "", port)?;
        let service = grpc.service.clone().unwrap_or_default();
        return rt.block_on(grpc_check(stream, service));
    }
    if let Some(exec) = &probe.exec {
        let command = exec.command.as_deref().unwrap_or_default();
        let (program, args) = command
            .split_first()
            .context("exec probe without command")?;
        let status = netns
            .command(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        if !status.success() {
            bail!("exec probe exited {status}");
        }
        return Ok(());
    }
    bail!("probe without a handler")
}

fn port(port: &IntOrString, container: &Container) -> Result<u16> {
    match port {
        IntOrString::Int(p) => Ok(u16::try_from(*p)?),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port as u16)
            .with_context(|| format!("no container port named {name}")),
    }
}

/// A TCP connection made inside the pod's namespace (usable from any thread).
fn connect(netns: &Netns, ip: Ipv4Addr, host: &str, port: u16) -> Result<TcpStream> {
    let ip: Ipv4Addr = if host.is_empty() { ip } else { host.parse()? };
    let addr = SocketAddr::from((ip, port));
    Ok(crate::netns::within(netns.name(), || {
        TcpStream::connect_timeout(&addr, TIMEOUT)
    })??)
}

/// One `grpc.health.v1.Health/Check` over h2c on an open connection.
async fn grpc_check(stream: TcpStream, service: String) -> Result<()> {
    use http_body_util::{BodyExt, Full};
    stream.set_nonblocking(true)?;
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::from_std(stream)?);
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await?;
    tokio::spawn(connection);
    // HealthCheckRequest { service = 1 }, in a gRPC frame (not compressed).
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a);
        message.push(service.len() as u8);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let request = http::Request::post("http://pod/grpc.health.v1.Health/Check")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(bytes::Bytes::from(frame)))?;
    let response = tokio::time::timeout(TIMEOUT, async {
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let collected = body.collect().await?;
        anyhow::Ok((parts, collected))
    })
    .await
    .context("grpc probe timed out")??;
    let (parts, collected) = response;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = trailers
        .get("grpc-status")
        .or_else(|| parts.headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if status != "0" {
        bail!("grpc health check answered grpc-status {status:?}");
    }
    // HealthCheckResponse { status = 1 }: SERVING is 1.
    let body = collected.to_bytes();
    if body.len() < 5 || body[5..] != [0x08, 0x01] {
        bail!("grpc health check: not SERVING ({:?})", &body[..]);
    }
    Ok(())
}
