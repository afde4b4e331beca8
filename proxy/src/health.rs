//! Active health checking of the proxy's own application.
//!
//! A proxy that registers a workload runs the check its service declares
//! (`Service.health_check`) against the address it forwards inbound traffic to, and
//! turns consecutive results into a verdict with the thresholds. A change of verdict
//! goes into [`Shared::workload_health`]; the discovery client reports it and the
//! control plane marks the endpoint, so every other proxy stops (or resumes) sending
//! to it with its next push. Checks run on the control runtime, off the data path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use weft_proto::grpc_health::health_check_response::ServingStatus;
use weft_proto::grpc_health::health_client::HealthClient;
use weft_proto::grpc_health::HealthCheckRequest;
use weft_proto::model::{HealthCheck, Probe, ResourceName};

use crate::drain::Watch;
use crate::state::{Shared, WorkloadHealth};

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

pub async fn run(shared: Arc<Shared>, mut drain: Watch) {
    let Some(workload) = shared.config.workload.clone() else {
        return;
    };
    let service = ResourceName {
        namespace: shared.config.namespace.clone(),
        name: workload.service.clone(),
    };
    let target = match shared.config.inbound_forward {
        Some(address) => address,
        // With capture, inbound traffic goes to the original port on loopback.
        None => SocketAddr::from(([127, 0, 0, 1], workload.ports.first().map_or(0, |p| p.port))),
    };
    let passed = metrics::counter!("weft_health_checks_total", "result" => "success");
    let failed = metrics::counter!("weft_health_checks_total", "result" => "failure");
    let healthy_gauge = metrics::gauge!("weft_workload_healthy");
    healthy_gauge.set(1.0);
    let mut snapshots = shared.snapshot.subscribe();
    let mut verdict = Verdict::default();
    let mut current: Option<HealthCheck> = None;
    loop {
        let declared = snapshots
            .borrow_and_update()
            .services
            .get(&service)
            .and_then(|view| view.service.health_check.clone());
        if declared != current {
            tracing::info!(check = ?declared, %target, "health check configured");
            current = declared;
            verdict = Verdict::default();
            shared.set_workload_health(WorkloadHealth::Healthy);
            healthy_gauge.set(1.0);
        }
        let Some(check) = current.clone() else {
            // Nothing to check until the service declares a check.
            tokio::select! {
                changed = snapshots.changed() => if changed.is_err() { return },
                () = drain.signaled() => return,
            }
            continue;
        };
        let next = tokio::time::Instant::now() + check.interval;
        let outcome = match tokio::time::timeout(check.timeout, probe(&check.probe, target)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {} ms", check.timeout.as_millis())),
        };
        match &outcome {
            Ok(()) => passed.increment(1),
            Err(_) => failed.increment(1),
        }
        if let Some(healthy) = verdict.record(&check, outcome.is_ok()) {
            healthy_gauge.set(if healthy { 1.0 } else { 0.0 });
            let health = match outcome {
                Ok(()) => {
                    tracing::info!(%target, "the application is healthy again");
                    WorkloadHealth::Healthy
                }
                Err(reason) => {
                    tracing::warn!(%target, %reason, "the application is unhealthy");
                    WorkloadHealth::Unhealthy(format!("{} check: {reason}", check.probe.kind()))
                }
            };
            shared.set_workload_health(health);
        }
        // Until the next check is due; a push that changes the check applies it at
        // once, any other push (endpoints elsewhere) leaves the schedule alone.
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next) => break,
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let declared = snapshots
                        .borrow()
                        .services
                        .get(&service)
                        .and_then(|view| view.service.health_check.clone());
                    if declared != current {
                        break;
                    }
                }
                () = drain.signaled() => return,
            }
        }
    }
}

/// One check; `Err` says why it failed.
pub async fn probe(probe: &Probe, target: SocketAddr) -> Result<(), String> {
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

    #[tokio::test]
    async fn probes_tell_a_listening_port_from_a_closed_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let open = listener.local_addr().expect("addr");
        assert_eq!(probe(&Probe::Tcp, open).await, Ok(()));
        drop(listener);
        let error = probe(&Probe::Tcp, open).await.expect_err("closed port");
        assert!(error.contains("connecting"), "{error}");
    }

    #[tokio::test]
    async fn the_grpc_probe_follows_the_serving_status() {
        let (reporter, service) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let check = |service: &str| Probe::Grpc {
            service: service.to_owned(),
        };
        reporter
            .set_service_status("shop.Web", tonic_health::ServingStatus::Serving)
            .await;
        assert_eq!(probe(&check(""), addr).await, Ok(()));
        assert_eq!(probe(&check("shop.Web"), addr).await, Ok(()));
        reporter
            .set_service_status("shop.Web", tonic_health::ServingStatus::NotServing)
            .await;
        let error = probe(&check("shop.Web"), addr)
            .await
            .expect_err("not serving");
        assert!(error.contains("NOT_SERVING"), "{error}");
        let error = probe(&check("shop.Other"), addr)
            .await
            .expect_err("unknown");
        assert!(error.contains("grpc.health.v1"), "{error}");
    }
}
