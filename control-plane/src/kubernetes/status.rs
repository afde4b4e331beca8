//! Writes each Weft CRD object's verdict to its `status.conditions`: `Accepted`, with
//! `status: "True"` and reason `Accepted`, or `status: "False"`, reason `Invalid` and
//! the field in the message (the shape Gateway API and Istio use, so `kubectl wait
//! --for=condition=Accepted` works). Only the replica holding the Lease writes.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::DynamicObject;
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use weft_proto::crd::{Condition, CrdStatus};

use super::policy::{Crd, Policies, Verdict};
use super::store::KubeStore;

const RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs until the process ends: after each change of verdicts or leadership, brings
/// every object's condition up to date if this replica leads.
pub async fn run(store: Arc<KubeStore>, mut leading: watch::Receiver<bool>) {
    let client = store.client().clone();
    let mut verdicts = store.policies().verdicts();
    loop {
        if *leading.borrow_and_update() {
            let current = verdicts.borrow_and_update().clone();
            for ((crd, name), verdict) in &current {
                if let Err(error) = write(&client, store.policies(), *crd, name, verdict).await {
                    tracing::warn!(kind = crd.kind(), name, %error, "status not written");
                }
            }
        }
        // Also every RETRY: a write that failed (a conflict, the API server away) is
        // tried again even if nothing changes.
        tokio::select! {
            changed = verdicts.changed() => if changed.is_err() { return },
            changed = leading.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Patches the object's status unless it already says what `verdict` says. The
/// condition's rules (the transition time moves only with the status) are
/// weft-proto's `CrdStatus::record`.
async fn write(
    client: &Client,
    policies: &Policies,
    crd: Crd,
    name: &str,
    verdict: &Verdict,
) -> Result<(), kube::Error> {
    let Some(object) = policies.object(crd, name) else {
        return Ok(());
    };
    if object.metadata.generation.unwrap_or(0) != verdict.generation {
        // The object moved on; its new generation gets its own verdict.
        return Ok(());
    }
    let current: CrdStatus =
        serde_json::from_value(object.data["status"].clone()).unwrap_or_default();
    let now = Timestamp::now().to_string();
    let condition = match &verdict.accepted {
        Ok(()) => Condition {
            message: "the control plane serves this object".to_owned(),
            ..Condition::accepted(verdict.generation, now)
        },
        Err(message) => Condition::invalid(verdict.generation, message.as_str(), now),
    };
    let mut next = current.clone();
    next.record(condition);
    if next == current {
        return Ok(());
    }
    let (namespace, short) = name.split_once('/').unwrap_or(("", name));
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &crd.resource());
    api.patch_status(
        short,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": next })),
    )
    .await?;
    tracing::info!(
        kind = crd.kind(),
        name,
        accepted = verdict.accepted.is_ok(),
        "status written"
    );
    Ok(())
}
