//! What the played kubelet tells the API server about a pod, as a kubelet does: its
//! IP, phase (Pending while initializing, Running, then Succeeded or Failed), the
//! conditions (PodReadyToStartContainers, Initialized, ContainersReady, Ready,
//! PodScheduled), and a status per container: `initContainerStatuses` for init
//! containers and native sidecars, `containerStatuses` for the others, each with
//! `started`, `ready`, `restartCount`, `state` and `lastState`.
//!
//! Times are RFC 3339 in whole seconds, as the API stores them; `PodInfo` keeps the
//! exact ones.

use std::time::SystemTime;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{json, Value};

use super::container::{ContainerKind, RunningContainer, Terminated};
use super::pod::{RunningPod, Stage};

/// Sends the pod's status, and notes when Ready=True was first sent.
pub async fn report(client: &Client, pod: &mut RunningPod) -> Result<()> {
    let ready = is_ready(pod);
    let patch = json!({ "status": status(pod, ready) });
    let sent = SystemTime::now();
    patch_status(client, &pod.pod, patch).await?;
    if ready && pod.reported_ready != Some(true) {
        pod.ready_sent_at = Some(sent);
    }
    if !ready {
        pod.ready_sent_at = None;
    }
    pod.reported_ready = Some(ready);
    Ok(())
}

/// Ready: running, and every regular container and sidecar ready.
fn is_ready(pod: &RunningPod) -> bool {
    pod.stage == Stage::Running
        && pod
            .containers
            .iter()
            .filter(|c| c.kind != ContainerKind::Init)
            .all(|c| c.ready)
}

fn status(pod: &RunningPod, ready: bool) -> Value {
    let phase = match pod.stage {
        Stage::Initializing { .. } => "Pending",
        Stage::Running | Stage::Ending { .. } => "Running",
        Stage::Done { succeeded: true } => "Succeeded",
        Stage::Done { succeeded: false } => "Failed",
    };
    let initialized = match pod.stage {
        Stage::Initializing { .. } => false,
        Stage::Running => true,
        // Ended after a failed init container: the regular ones never ran.
        Stage::Ending { .. } | Stage::Done { .. } => pod
            .containers
            .iter()
            .any(|c| c.kind == ContainerKind::Regular && c.process.is_some()),
    };
    let not_ready = match pod.stage {
        Stage::Done { .. } => "PodCompleted",
        Stage::Initializing { .. } => "ContainersNotInitialized",
        _ => "ContainersNotReady",
    };
    let now = rfc3339(SystemTime::now());
    let cond = |kind: &str, status: bool, reason: &str| {
        let mut c = json!({"type": kind, "status": if status { "True" } else { "False" },
                           "lastProbeTime": null, "lastTransitionTime": now});
        if !status {
            c["reason"] = json!(reason);
        }
        c
    };
    let statuses = |init: bool| -> Vec<Value> {
        pod.containers
            .iter()
            .filter(|c| (c.kind != ContainerKind::Regular) == init)
            .map(container_status)
            .collect()
    };
    let ip = pod.ip.to_string();
    json!({
        "phase": phase,
        "hostIP": ip, "hostIPs": [{"ip": ip}],
        "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": rfc3339(pod.started_at),
        "conditions": [
            cond("PodReadyToStartContainers", pod.sandbox.is_some(), ""),
            cond("Initialized", initialized, "ContainersNotInitialized"),
            cond("ContainersReady", ready, not_ready),
            cond("Ready", ready, not_ready),
            cond("PodScheduled", true, ""),
        ],
        "initContainerStatuses": statuses(true),
        "containerStatuses": statuses(false),
    })
}

fn container_status(c: &RunningContainer) -> Value {
    let state = match (&c.process, c.terminated) {
        (_, Some(ended)) => json!({ "terminated": terminated(&ended) }),
        (Some(_), None) => json!({"running": {"startedAt": c.started_at.map(rfc3339)}}),
        (None, _) => match &c.start_error {
            Some(message) => {
                json!({"waiting": {"reason": "CreateContainerError", "message": message}})
            }
            None => json!({"waiting": {"reason": "PodInitializing"}}),
        },
    };
    let last_state = match &c.last_terminated {
        Some(ended) => json!({ "terminated": terminated(ended) }),
        None => json!({}),
    };
    // A plain init container is ready once it has completed, as the kubelet says.
    let ready = match c.kind {
        ContainerKind::Init => c.terminated.is_some_and(|t| t.exit_code == 0),
        _ => c.ready,
    };
    let mut status = json!({
        "name": c.spec.name, "image": c.spec.image.clone().unwrap_or_default(), "imageID": "",
        "ready": ready, "started": c.started(), "restartCount": c.restarts,
        "state": state, "lastState": last_state,
    });
    if let Some(pid) = c.process.as_ref().and_then(|p| p.pid()) {
        status["containerID"] = json!(format!("weft-e2e://{pid}"));
    }
    status
}

fn terminated(ended: &Terminated) -> Value {
    json!({
        "exitCode": ended.exit_code,
        "reason": if ended.exit_code == 0 { "Completed" } else { "Error" },
        "startedAt": rfc3339(ended.started_at),
        "finishedAt": rfc3339(ended.finished_at),
    })
}

/// A pod whose sandbox could not be set up: Pending, not Ready, with the reason.
pub async fn report_start_failure(client: &Client, pod: &Pod, message: &str) -> Result<()> {
    let patch = json!({"status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "True"},
        {"type": "Ready", "status": "False", "reason": "StartFailed", "message": message},
    ]}});
    patch_status(client, pod, patch).await
}

async fn patch_status(client: &Client, pod: &Pod, patch: Value) -> Result<()> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    Api::<Pod>::namespaced(client.clone(), namespace)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .with_context(|| format!("patch status of {namespace}/{name}"))?;
    Ok(())
}

/// `t` in RFC 3339, whole seconds.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_default()
}
