//! What a proxy reports about the workload it fronts, after its Hello: a health
//! verdict of its active check, or that it is draining.

use prost::Message;
use weft_proto::v1;

use super::stream::Context;
use crate::registry::Proxy;

pub const HEALTH_DRAINING: &str = "draining";

/// Applies a proxy's report on its workload: a draining workload is deregistered at
/// once (no grace period: its proxy still serves, and wants peers gone before it
/// stops), a health verdict re-registers it with that health so that every view
/// marks its endpoints.
pub async fn report(
    context: &Context,
    proxy: &Proxy,
    workload: &mut Option<v1::Workload>,
    status: &v1::WorkloadStatus,
) {
    let node_id = proxy.node_id.as_str();
    let Some(current) = workload.as_mut() else {
        return;
    };
    if matches!(
        status.health.as_str(),
        HEALTH_DRAINING | "healthy" | "unhealthy"
    ) {
        proxy.set_health(&status.health);
    }
    match status.health.as_str() {
        HEALTH_DRAINING => {
            *workload = None;
            match context.store.deregister(node_id).await {
                Ok(_) => tracing::info!(node = %node_id, "workload draining; endpoint withdrawn"),
                Err(e) => {
                    tracing::error!(node = %node_id, error = %e, "withdrawing a draining workload failed")
                }
            }
        }
        health @ ("healthy" | "unhealthy") => {
            if current.health == health || (current.health.is_empty() && health == "healthy") {
                return;
            }
            current.health = health.to_owned();
            tracing::info!(node = %node_id, health, reason = %status.reason, "workload health changed");
            if let Err(e) = context
                .store
                .register(node_id, current.encode_to_vec())
                .await
            {
                tracing::error!(node = %node_id, error = %e, "recording the workload's health failed");
            }
        }
        other => {
            tracing::warn!(node = %node_id, health = other, "ignoring an unknown workload state");
        }
    }
}
