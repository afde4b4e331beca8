//! Injection as a JSON patch, for the webhook (a Pod) and for `weftctl inject` (the
//! pod templates inside manifests). Both go through [`patch`]: the pod is read into
//! Kubernetes' own types, injected by [`super::pod::inject`], and the difference
//! applied to the document as it was, so fields the types do not know survive and
//! the webhook's patch and weftctl's output add exactly the same things.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde::Deserialize;
use serde_json::Value;

use super::pod::{inject, InjectError, Outcome, Target};
use super::settings::Settings;

/// Injects the pod whose `metadata` and `spec` are in `template` (a Pod or a pod
/// template, as JSON): the outcome, and the patch that does it against `template`.
pub fn patch(
    template: &Value,
    target: &Target<'_>,
    settings: &Settings,
) -> Result<(Outcome, json_patch::Patch), InjectError> {
    let shape = serde_json::json!({
        "metadata": template.get("metadata").cloned().unwrap_or(Value::Null),
        "spec": template.get("spec").cloned().unwrap_or(Value::Null),
    });
    let mut typed: PodTemplateSpec =
        serde_json::from_value(shape).map_err(|e| InjectError(format!("not a pod: {e}")))?;
    let before = to_json(&typed)?;
    let metadata = typed.metadata.get_or_insert_with(Default::default);
    let spec = typed.spec.get_or_insert_with(Default::default);
    let outcome = inject(metadata, spec, target, settings)?;
    let after = to_json(&typed)?;
    Ok((outcome, json_patch::diff(&before, &after)))
}

fn to_json(template: &PodTemplateSpec) -> Result<Value, InjectError> {
    serde_json::to_value(template).map_err(|e| InjectError(e.to_string()))
}

/// One object of a manifest and what injection did to it, for weftctl's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `deployment/web`, `pod/client`, ...
    pub object: String,
    pub outcome: Outcome,
}

/// Injects every pod template in the YAML documents of `text` (several documents,
/// `List` objects); other objects pass through unchanged. `namespace` is used for
/// objects that do not name theirs.
pub fn inject_manifests(
    text: &str,
    namespace: &str,
    control_plane_namespace: &str,
    settings: &Settings,
) -> Result<(String, Vec<Report>), InjectError> {
    let mut out = String::new();
    let mut reports = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let yaml = serde_yaml::Value::deserialize(document)
            .map_err(|e| InjectError(format!("document {}: {e}", index + 1)))?;
        if yaml.is_null() {
            continue;
        }
        let mut json: Value = serde_json::to_value(&yaml)
            .map_err(|e| InjectError(format!("document {}: {e}", index + 1)))?;
        inject_object(
            &mut json,
            namespace,
            control_plane_namespace,
            settings,
            &mut reports,
        )
        .map_err(|e| InjectError(format!("document {}: {}", index + 1, e.0)))?;
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml::to_string(&json).map_err(|e| InjectError(e.to_string()))?);
    }
    Ok((out, reports))
}

/// Where a kind keeps its pod template.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

fn inject_object(
    object: &mut Value,
    namespace: &str,
    control_plane_namespace: &str,
    settings: &Settings,
    reports: &mut Vec<Report>,
) -> Result<(), InjectError> {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if kind == "List" || kind.ends_with("List") {
        if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                inject_object(item, namespace, control_plane_namespace, settings, reports)?;
            }
        }
        return Ok(());
    }
    let Some(pointer) = template_pointer(&kind) else {
        return Ok(());
    };
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned();
    let own_namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let object_name = format!("{}/{name}", kind.to_lowercase());
    let template = object
        .pointer_mut(pointer)
        .ok_or_else(|| InjectError(format!("{object_name}: no pod template at {pointer}")))?;
    let target = Target {
        namespace: own_namespace.as_deref().unwrap_or(namespace),
        control_plane_namespace,
    };
    let (outcome, patch) = self::patch(template, &target, settings)
        .map_err(|e| InjectError(format!("{object_name}: {}", e.0)))?;
    json_patch::patch(template, &patch).map_err(|e| InjectError(format!("{object_name}: {e}")))?;
    reports.push(Report {
        object: object_name,
        outcome,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::pod::Skip;

    fn run(text: &str) -> (Vec<serde_yaml::Value>, Vec<Report>) {
        let (out, reports) =
            inject_manifests(text, "default", "weft", &Settings::default()).expect("injects");
        let documents = serde_yaml::Deserializer::from_str(&out)
            .map(|d| serde_yaml::Value::deserialize(d).expect("the manifests inject"))
            .collect();
        (documents, reports)
    }

    fn init_names(template: &serde_yaml::Value) -> Vec<String> {
        template["spec"]["initContainers"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|c| {
                c["name"]
                    .as_str()
                    .expect("present in the fixture")
                    .to_owned()
            })
            .collect()
    }

    const WORKLOADS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: web, x-unknown-to-the-types: kept}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: job, image: job}]
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Pod, metadata: {name: one}, spec: {containers: [{name: a}]}}
- apiVersion: apps/v1
  kind: StatefulSet
  metadata: {name: db}
  spec:
    template:
      metadata: {labels: {weft.io/inject: disabled}}
      spec: {containers: [{name: db}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
"#;

    #[test]
    fn every_pod_template_is_injected_and_the_rest_passes_through() {
        let (documents, reports) = run(WORKLOADS);
        assert_eq!(documents.len(), 4);
        let deployment = &documents[0]["spec"]["template"];
        assert_eq!(init_names(deployment), ["weft-init", "weft-proxy"]);
        assert_eq!(
            deployment["spec"]["containers"][0]["x-unknown-to-the-types"].as_str(),
            Some("kept"),
            "fields the types do not know survive"
        );
        let cron = &documents[1]["spec"]["jobTemplate"]["spec"]["template"];
        assert_eq!(init_names(cron), ["weft-init", "weft-proxy"]);
        let pod = &documents[2]["items"][0];
        assert_eq!(init_names(pod), ["weft-init", "weft-proxy"]);
        assert!(init_names(&documents[2]["items"][1]["spec"]["template"]).is_empty());
        assert_eq!(documents[3]["kind"].as_str(), Some("Service"));
        let outcomes: Vec<(&str, &Outcome)> = reports
            .iter()
            .map(|r| (r.object.as_str(), &r.outcome))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("deployment/web", &Outcome::Injected),
                ("cronjob/nightly", &Outcome::Injected),
                ("pod/one", &Outcome::Injected),
                ("statefulset/db", &Outcome::Skipped(Skip::OptedOut)),
            ]
        );
    }

    #[test]
    fn injecting_the_output_again_gives_the_same_text() {
        let (once, _) = inject_manifests(WORKLOADS, "default", "weft", &Settings::default())
            .expect("the manifests inject");
        let (twice, reports) = inject_manifests(&once, "default", "weft", &Settings::default())
            .expect("the manifests inject");
        assert_eq!(once, twice);
        assert!(reports
            .iter()
            .all(|r| matches!(r.outcome, Outcome::Skipped(_))));
    }

    #[test]
    fn a_refusal_names_the_document_and_the_object() {
        let text = "kind: Pod\nmetadata: {name: p, annotations: {weft.io/exclude-inbound-ports: x}}\nspec: {containers: [{name: a}]}\n";
        let error =
            inject_manifests(text, "default", "weft", &Settings::default()).expect_err("refused");
        assert!(error.0.contains("document 1: pod/p:"), "{error}");
        assert!(error.0.contains("exclude-inbound-ports"), "{error}");
    }

    #[test]
    fn objects_in_the_control_plane_namespace_are_not_injected() {
        let text =
            "kind: Pod\nmetadata: {name: p, namespace: weft}\nspec: {containers: [{name: a}]}\n";
        let (_, reports) = run(text);
        assert_eq!(reports[0].outcome, Outcome::Skipped(Skip::SystemNamespace));
    }
}
