//! The health-check probes, shared by the proxy (which checks its own application)
//! and the control plane (which checks statically declared endpoints): one check
//! each, `Err` saying why it failed. Timeouts are the caller's.
//!
//! They live in this crate, the one both sides depend on, because the gRPC probe
//! uses the `grpc.health.v1` client generated here.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::grpc_health::health_check_response::ServingStatus;
use crate::grpc_health::health_client::HealthClient;
use crate::grpc_health::HealthCheckRequest;
use crate::model::{HealthCheck, Probe};

/// One check; `Err` says why it failed.
pub async fn run(probe: &Probe, target: SocketAddr) -> Result<(), String> {
    match probe {
        Probe::Tcp => TcpStream::connect(target)
            .await
            .map(drop)
            .map_err(|e| format!("connecting to {target}: {e}")),
        Probe::Http {
            path,
            expected_status,
        } => http(target, path, *expected_status).await,
        Probe::Grpc { service } => grpc(target, service).await,
    }
}

async fn http(target: SocketAddr, path: &str, expected: u16) -> Result<(), String> {
    let stream = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connecting to {target}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {target}: {e}"))?;
    // Dropped with this function: one connection per check, like a kubelet probe.
    let driver = tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, target.to_string())
        .header(http::header::USER_AGENT, "weft-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building the request: {e}"))?;
    let result = sender.send_request(request).await;
    driver.abort();
    let status = result
        .map_err(|e| format!("GET {path}: {e}"))?
        .status()
        .as_u16();
    if status == expected {
        Ok(())
    } else {
        Err(format!("GET {path} answered {status}, expected {expected}"))
    }
}

async fn grpc(target: SocketAddr, service: &str) -> Result<(), String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{target}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connecting to {target}: {e}"))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|status| format!("grpc.health.v1 Check: {}", status.message()))?;
    match answer.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(format!("grpc.health.v1 status {}", other.as_str_name())),
    }
}

/// Consecutive results, turned into a verdict by the thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    healthy: bool,
    successes: u32,
    failures: u32,
}

impl Default for Verdict {
    /// A starting application is taken as healthy: its proxy registered it so, and
    /// the first check runs at once.
    fn default() -> Verdict {
        Verdict {
            healthy: true,
            successes: 0,
            failures: 0,
        }
    }
}

impl Verdict {
    /// Records one result; returns the new verdict when it changed.
    pub fn record(&mut self, check: &HealthCheck, success: bool) -> Option<bool> {
        if success {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
        }
        let flip = if self.healthy {
            self.failures >= check.unhealthy_threshold
        } else {
            self.successes >= check.healthy_threshold
        };
        if flip {
            self.healthy = !self.healthy;
            return Some(self.healthy);
        }
        None
    }
}

/// A verdict's state, as metrics and logs show it.
impl Verdict {
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(healthy_threshold: u32, unhealthy_threshold: u32) -> HealthCheck {
        HealthCheck {
            probe: Probe::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold,
            unhealthy_threshold,
        }
    }

    #[test]
    fn thresholds_need_consecutive_results() {
        let check = check(2, 3);
        let mut verdict = Verdict::default();
        assert_eq!(verdict.record(&check, false), None);
        assert_eq!(verdict.record(&check, false), None);
        // A success in between starts the count again.
        assert_eq!(verdict.record(&check, true), None);
        assert_eq!(verdict.record(&check, false), None);
        assert_eq!(verdict.record(&check, false), None);
        assert_eq!(verdict.record(&check, false), Some(false));
        assert_eq!(verdict.record(&check, false), None);
        assert_eq!(verdict.record(&check, true), None);
        assert_eq!(verdict.record(&check, true), Some(true));
    }
}
