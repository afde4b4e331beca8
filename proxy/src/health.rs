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

use weft_proto::model::{HealthCheck, ResourceName};
use weft_proto::probe::{self, Verdict};

use crate::drain::Watch;
use crate::state::{Shared, WorkloadHealth};

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
        let outcome =
            match tokio::time::timeout(check.timeout, probe::run(&check.probe, target)).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::model::Probe;

    #[tokio::test]
    async fn probes_tell_a_listening_port_from_a_closed_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let open = listener.local_addr().expect("addr");
        assert_eq!(probe::run(&Probe::Tcp, open).await, Ok(()));
        drop(listener);
        let error = probe::run(&Probe::Tcp, open)
            .await
            .expect_err("closed port");
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
        assert_eq!(probe::run(&check(""), addr).await, Ok(()));
        assert_eq!(probe::run(&check("shop.Web"), addr).await, Ok(()));
        reporter
            .set_service_status("shop.Web", tonic_health::ServingStatus::NotServing)
            .await;
        let error = probe::run(&check("shop.Web"), addr)
            .await
            .expect_err("not serving");
        assert!(error.contains("NOT_SERVING"), "{error}");
        let error = probe::run(&check("shop.Other"), addr)
            .await
            .expect_err("unknown");
        assert!(error.contains("grpc.health.v1"), "{error}");
    }
}
