//! Writes each Weft CRD object's verdict to its `status.conditions`: `Accepted`, with
//! `status: "True"` and reason `Accepted`, or `status: "False"`, reason `Invalid` and
//! the field in the message (the shape Gateway API and Istio use, so `kubectl wait
//! --for=condition=Accepted` works), and each mesh route's entries in
//! `status.parents` (one per Service parent, under [`gateway::CONTROLLER`], with
//! `Accepted` and `ResolvedRefs`; other controllers' entries are left as they are).
//! Only the replica holding the Lease writes.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::DynamicObject;
use kube::{Api, Client};
use serde_json::{json, Value};
use tokio::sync::watch;
use weft_proto::crd::{Condition, ConditionStatus, CrdStatus};

use super::gateway::{self, Refusal, RouteKind, RouteVerdict, Routes};
use super::policy::{Crd, Policies, Verdict};
use super::store::KubeStore;

const RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs until the process ends: after each change of verdicts or leadership, brings
/// every object's condition up to date if this replica leads.
pub async fn run(store: Arc<KubeStore>, mut leading: watch::Receiver<bool>) {
    let client = store.client().clone();
    let mut verdicts = store.policies().verdicts();
    let mut route_verdicts = store.routes().verdicts();
    loop {
        if *leading.borrow_and_update() {
            let current = verdicts.borrow_and_update().clone();
            for ((crd, name), verdict) in &current {
                if let Err(error) = write(&client, store.policies(), *crd, name, verdict).await {
                    tracing::warn!(kind = crd.kind(), name, %error, "status not written");
                }
            }
            let current = route_verdicts.borrow_and_update().clone();
            for ((kind, name), verdict) in &current {
                if let Err(error) = write_route(&client, store.routes(), *kind, name, verdict).await
                {
                    tracing::warn!(kind = kind.kind(), name, %error, "status not written");
                }
            }
        }
        // Also every RETRY: a write that failed (a conflict, the API server away) is
        // tried again even if nothing changes.
        tokio::select! {
            changed = verdicts.changed() => if changed.is_err() { return },
            changed = route_verdicts.changed() => if changed.is_err() { return },
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

/// Brings this controller's entries of a route's `status.parents` in line with
/// `verdict`, in place: other controllers' entries keep their content and order, and
/// the transition times of conditions that did not change are kept.
async fn write_route(
    client: &Client,
    routes: &Routes,
    kind: RouteKind,
    name: &str,
    verdict: &RouteVerdict,
) -> Result<(), kube::Error> {
    let Some(object) = routes.object(kind, name) else {
        return Ok(());
    };
    if object.metadata.generation.unwrap_or(0) != verdict.generation {
        return Ok(());
    }
    let current: Vec<Value> = object.data["status"]["parents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let next = route_parents(&current, verdict, &Timestamp::now().to_string());
    if next == current {
        return Ok(());
    }
    let (namespace, short) = name.split_once('/').unwrap_or(("", name));
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &kind.resource());
    // The resourceVersion makes the patch conditional: a list written by another
    // controller since this replica read it is not overwritten (the next round
    // retries with what it wrote).
    api.patch_status(
        short,
        &PatchParams::default(),
        &Patch::Merge(&json!({
            "metadata": { "resourceVersion": object.metadata.resource_version },
            "status": { "parents": next },
        })),
    )
    .await?;
    tracing::info!(kind = kind.kind(), name, "route status written");
    Ok(())
}

/// The `status.parents` list `verdict` makes of `current`.
pub fn route_parents(current: &[Value], verdict: &RouteVerdict, now: &str) -> Vec<Value> {
    let ours = |entry: &Value| entry["controllerName"] == gateway::CONTROLLER;
    let entry = |parent: &gateway::ParentVerdict, previous: Option<&Value>| {
        let mut conditions = CrdStatus {
            observed_generation: None,
            conditions: previous
                .and_then(|p| serde_json::from_value(p["conditions"].clone()).ok())
                .unwrap_or_default(),
        };
        conditions.record(condition(
            gateway::ACCEPTED,
            gateway::ACCEPTED,
            &parent.accepted,
            verdict.generation,
            now,
        ));
        conditions.record(condition(
            gateway::RESOLVED_REFS,
            gateway::RESOLVED_REFS,
            &parent.resolved,
            verdict.generation,
            now,
        ));
        json!({
            "parentRef": parent.parent_ref,
            "controllerName": gateway::CONTROLLER,
            "conditions": conditions.conditions,
        })
    };
    let mut next = Vec::with_capacity(current.len().max(verdict.parents.len()));
    for existing in current {
        if !ours(existing) {
            next.push(existing.clone());
        } else if let Some(parent) = verdict
            .parents
            .iter()
            .find(|p| p.parent_ref == existing["parentRef"])
        {
            next.push(entry(parent, Some(existing)));
        }
    }
    for parent in &verdict.parents {
        if !current
            .iter()
            .any(|e| ours(e) && e["parentRef"] == parent.parent_ref)
        {
            next.push(entry(parent, None));
        }
    }
    next
}

fn condition(
    condition_type: &str,
    reason_when_true: &str,
    outcome: &Result<(), Refusal>,
    generation: i64,
    now: &str,
) -> Condition {
    let (status, reason, message) = match outcome {
        Ok(()) => (ConditionStatus::True, reason_when_true, String::new()),
        Err(refusal) => (
            ConditionStatus::False,
            refusal.reason,
            refusal.message.clone(),
        ),
    };
    Condition {
        condition_type: condition_type.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation: Some(generation),
        last_transition_time: now.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kubernetes::gateway::ParentVerdict;

    fn verdict(generation: i64, resolved: Result<(), Refusal>) -> RouteVerdict {
        RouteVerdict {
            generation,
            parents: vec![ParentVerdict {
                parent_ref: json!({"group": "", "kind": "Service", "name": "orders"}),
                accepted: Ok(()),
                resolved,
            }],
        }
    }

    #[test]
    fn other_controllers_entries_are_kept_and_ours_updated_in_place() {
        let theirs = json!({
            "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"},
            "controllerName": "example.com/gateway",
            "conditions": [],
        });
        let first = route_parents(
            std::slice::from_ref(&theirs),
            &verdict(1, Ok(())),
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(first.len(), 2);
        assert_eq!(first[0], theirs);
        assert_eq!(first[1]["controllerName"], gateway::CONTROLLER);
        assert_eq!(first[1]["conditions"][0]["type"], "Accepted");
        assert_eq!(first[1]["conditions"][0]["status"], "True");
        assert_eq!(first[1]["conditions"][1]["type"], "ResolvedRefs");

        // Judged again, unchanged: nothing to write, even at a later time.
        let again = route_parents(&first, &verdict(1, Ok(())), "2026-01-02T00:00:00Z");
        assert_eq!(again, first);

        // A backend goes: ResolvedRefs turns False, and only its time moves.
        let missing = Refusal {
            reason: gateway::BACKEND_NOT_FOUND,
            message: "spec.rules[0].backendRefs[0]: Service shop/gone does not exist".to_owned(),
        };
        let later = route_parents(&first, &verdict(2, Err(missing)), "2026-01-03T00:00:00Z");
        assert_eq!(later[0], theirs);
        let conditions = &later[1]["conditions"];
        assert_eq!(conditions[0]["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert_eq!(conditions[0]["observedGeneration"], 2);
        assert_eq!(conditions[1]["status"], "False");
        assert_eq!(conditions[1]["reason"], "BackendNotFound");
        assert_eq!(conditions[1]["lastTransitionTime"], "2026-01-03T00:00:00Z");
    }
}
