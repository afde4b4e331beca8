//! The shutdown sequence, after SIGTERM, SIGINT or `POST /shutdown`.
//!
//! 1. [`withdraw`]: report the workload as draining, so the control plane removes its
//!    endpoint from every view at once, and keep serving while peers apply that.
//! 2. Signal the drain: listeners stop accepting, HTTP connections finish their
//!    current requests (`Connection: close`, GOAWAY) and close.
//! 3. Wait for the work in flight, at most `--shutdown-grace-period-ms`.

use std::net::SocketAddr;

use crate::drain::Drain;
use crate::snapshot::Snapshot;
use crate::state::{ConnectionState, Shared, WorkloadHealth};

/// Runs the whole sequence; returns when the proxy may exit.
pub async fn run(shared: &Shared, mut drain: Drain) {
    // A static config has no control plane to tell.
    if shared.config.static_config.is_none() {
        withdraw(shared).await;
    }
    drain.signal();
    tracing::info!("stopped accepting; waiting for requests in flight");
    let grace = shared.config.shutdown_grace_period;
    match tokio::time::timeout(grace, drain.wait()).await {
        Ok(()) => tracing::info!("drained; exiting"),
        Err(_) => tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "the shutdown grace period ended with work in flight; closing it"
        ),
    }
}

/// The first step of a drain: reports the workload as draining, which makes the
/// control plane withdraw its endpoint at once, then keeps serving while peers
/// stop sending. The proxy's own view confirms the withdrawal (the push that removes
/// the endpoint reaches every proxy at about the same time); it waits at most
/// `--drain-delay-ms` for that, then `--drain-delay-ms` more for peers to apply it.
pub async fn withdraw(shared: &Shared) {
    let (Some(workload), delay) = (&shared.config.workload, shared.config.drain_delay) else {
        shared
            .workload_health
            .send_replace(WorkloadHealth::Draining);
        return;
    };
    let service = weft_proto::model::ResourceName {
        namespace: shared.config.namespace.clone(),
        name: workload.service.clone(),
    };
    let own: Vec<SocketAddr> = workload
        .ports
        .iter()
        .map(|p| SocketAddr::new(workload.address, p.port))
        .collect();
    let listed = |snapshot: &Snapshot| {
        snapshot.endpoints.get(&service).is_some_and(|view| {
            view.endpoints
                .endpoints
                .iter()
                .any(|e| own.contains(&e.address))
        })
    };
    // Only a push that arrives after the report counts as the confirmation: the
    // current view may not list the endpoint yet (a proxy that just connected).
    let mut snapshots = shared.snapshot.subscribe();
    snapshots.borrow_and_update();
    shared
        .workload_health
        .send_replace(WorkloadHealth::Draining);
    // Without a control plane nobody can tell the peers, so waiting gains nothing.
    let connected = || shared.connection().state == ConnectionState::Connected;
    if delay.is_zero() || !connected() {
        if !delay.is_zero() {
            tracing::warn!("the control plane is unreachable, so peers cannot learn of the drain; draining now");
        }
        return;
    }
    let confirmed = tokio::time::timeout(delay, async {
        while snapshots.changed().await.is_ok() {
            if !listed(&snapshots.borrow_and_update()) {
                return true;
            }
        }
        false
    })
    .await;
    match confirmed {
        Ok(true) => tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "the control plane withdrew the endpoint; serving while peers apply it"
        ),
        _ if !connected() => {
            tracing::warn!("lost the control plane while withdrawing the endpoint; draining now");
            return;
        }
        _ => tracing::warn!(
            delay_ms = delay.as_millis() as u64,
            "the endpoint's withdrawal was not confirmed in time; serving a while longer anyway"
        ),
    }
    tokio::time::sleep(delay).await;
}
