//! The CustomResourceDefinitions of Weft's kinds, rendered from the Rust types that
//! read them, so that the schema the API server enforces and the fields the control
//! plane reads cannot drift apart.
//!
//! `deploy/kubernetes/base/crds.yaml` is this module's output, committed; a test
//! regenerates it and fails on any difference (`WEFT_BLESS=1` rewrites the file), as
//! tonic's generated code is regenerated in CI and diffed.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Value};

use super::structural::{structural, NotStructural};
use super::{CrdKind, CrdStatus, AUTHORIZATION_POLICY, GROUP, SERVICE_POLICY, VERSION};
use crate::document::{AuthorizationPolicySpec, ServicePolicySpec};

/// The first lines of `crds.yaml`.
const HEADER: &str = "\
# Weft's custom resources (group weft.io). Generated from weft-proto's document types
# (proto/src/crd): do not edit. To regenerate after changing those types:
#   WEFT_BLESS=1 cargo test -p weft-proto --features schema crds_yaml
# `weftctl crds` prints the same text.
";

/// The two CRDs, ServicePolicy then AuthorizationPolicy.
pub fn crd_manifests() -> Result<Vec<Value>, NotStructural> {
    let accepted = json!({
        "name": "Accepted",
        "type": "string",
        "description": "Whether the control plane validated the spec and serves it.",
        "jsonPath": ".status.conditions[?(@.type==\"Accepted\")].status",
    });
    let age = json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"});
    let service_policy = crd(
        SERVICE_POLICY,
        "The mesh policy of the Kubernetes Service of the same name in the same namespace \
         (metadata.name is the Service's name): load balancing, mTLS, timeouts, retries, \
         outlier detection, circuit breakers, locality and health checks. Ports, virtual \
         IPs and hostnames come from the Service itself.",
        schema_of::<ServicePolicySpec>()?,
        vec![
            json!({"name": "mTLS", "type": "string", "jsonPath": ".spec.mtls"}),
            accepted.clone(),
            age.clone(),
        ],
    )?;
    let authorization_policy = crd(
        AUTHORIZATION_POLICY,
        "Which callers (by SPIFFE ID) may reach a service, or one port of it.",
        schema_of::<AuthorizationPolicySpec>()?,
        vec![
            json!({"name": "Service", "type": "string", "jsonPath": ".spec.service"}),
            json!({"name": "Default", "type": "string", "jsonPath": ".spec.defaultAction"}),
            accepted,
            age,
        ],
    )?;
    Ok(vec![service_policy, authorization_policy])
}

/// The text of `deploy/kubernetes/base/crds.yaml`.
pub fn crds_yaml() -> Result<String, NotStructural> {
    let mut out = HEADER.to_owned();
    for manifest in crd_manifests()? {
        out.push_str("---\n");
        // Keys are sorted here rather than left to serde_json's map, whose order
        // depends on a cargo feature that any crate of the build may turn on.
        let text = serde_yaml::to_string(&sorted(&manifest)).map_err(|e| NotStructural {
            path: "(manifest)".to_owned(),
            reason: e.to_string(),
        })?;
        out.push_str(&text);
    }
    Ok(out)
}

fn crd(
    names: CrdKind,
    description: &str,
    spec: Value,
    columns: Vec<Value>,
) -> Result<Value, NotStructural> {
    let status = schema_of::<CrdStatus>()?;
    let mut manifest = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": names.crd_name(),
            "labels": {"app.kubernetes.io/part-of": "weft"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": names.kind,
                "listKind": format!("{}List", names.kind),
                "plural": names.plural,
                "singular": names.singular,
                "shortNames": names.short_names,
                "categories": ["weft"],
            },
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": description,
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec,
                        "status": status,
                    },
                }},
            }],
        },
    });
    if names.short_names.is_empty() {
        if let Some(names) = manifest["spec"]["names"].as_object_mut() {
            names.remove("shortNames");
        }
    }
    Ok(manifest)
}

/// The structural schema of `T`, every subschema inlined.
fn schema_of<T: JsonSchema>() -> Result<Value, NotStructural> {
    let settings = SchemaSettings::openapi3().with(|s| {
        s.inline_subschemas = true;
        s.meta_schema = None;
    });
    let schema = settings.into_generator().into_root_schema_for::<T>();
    structural(schema.to_value())
}

/// `value` as YAML, with every map's keys in sorted order.
fn sorted(value: &Value) -> serde_yaml::Value {
    match value {
        Value::Null => serde_yaml::Value::Null,
        Value::Bool(b) => serde_yaml::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => serde_yaml::Value::from(i),
            (None, Some(u)) => serde_yaml::Value::from(u),
            _ => serde_yaml::Value::from(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => serde_yaml::Value::String(s.clone()),
        Value::Array(items) => serde_yaml::Value::Sequence(items.iter().map(sorted).collect()),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut mapping = serde_yaml::Mapping::new();
            for key in keys {
                mapping.insert(serde_yaml::Value::String(key.clone()), sorted(&map[key]));
            }
            serde_yaml::Value::Mapping(mapping)
        }
    }
}
