use std::path::PathBuf;

use super::*;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/base/crds.yaml")
}

/// The committed CRDs are what the types generate; `WEFT_BLESS=1` rewrites them.
#[test]
fn crds_yaml_is_generated_from_the_types() {
    let generated = crds_yaml().expect("the schemas are structural");
    let path = committed_path();
    if std::env::var_os("WEFT_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("write crds.yaml");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} differs from the generated CRDs; run \
         `WEFT_BLESS=1 cargo test -p weft-proto --features schema crds_yaml` and commit it",
        path.display()
    );
}

fn rewrite(schema: serde_json::Value) -> Result<serde_json::Value, NotStructural> {
    structural(schema)
}

fn path_of(error: NotStructural) -> String {
    error.path
}

#[test]
fn document_keywords_and_defaults_are_dropped() {
    let schema = serde_json::json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Spec",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "port": {"type": "integer", "format": "uint32", "minimum": 0, "default": 0},
        },
        "required": [],
    });
    assert_eq!(
        rewrite(schema).expect("structural"),
        serde_json::json!({
            "type": "object",
            "properties": {"port": {
                "type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295u64,
            }},
        })
    );
}

#[test]
fn null_types_and_null_branches_become_nullable() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "a": {"type": ["integer", "null"], "format": "int64"},
            "b": {
                "description": "the field's",
                "anyOf": [
                    {"type": "object", "description": "the type's", "properties": {}},
                    {"type": "null"},
                ],
            },
        },
    });
    let rewritten = rewrite(schema).expect("structural");
    assert_eq!(
        rewritten["properties"]["a"],
        serde_json::json!({"type": "integer", "format": "int64", "nullable": true})
    );
    assert_eq!(
        rewritten["properties"]["b"],
        serde_json::json!({
            "type": "object", "description": "the field's", "nullable": true, "properties": {},
        })
    );
}

#[test]
fn constant_branches_become_one_enum() {
    let schema = serde_json::json!({
        "oneOf": [
            {"type": "string", "const": "STRICT", "description": "mTLS only"},
            {"type": "string", "enum": ["PERMISSIVE", "DISABLED"]},
        ],
    });
    assert_eq!(
        rewrite(schema).expect("structural"),
        serde_json::json!({"type": "string", "enum": ["STRICT", "PERMISSIVE", "DISABLED"]})
    );
}

#[test]
fn what_cannot_be_structural_is_an_error_naming_the_node() {
    let field = |schema: serde_json::Value| {
        serde_json::json!({"type": "object", "properties": {"spec": {
            "type": "object", "properties": {"field": schema},
        }}})
    };
    for bad in [
        serde_json::json!({"$ref": "#/components/schemas/Other"}),
        serde_json::json!({"description": "no type"}),
        serde_json::json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
        serde_json::json!({"type": ["string", "integer"]}),
        serde_json::json!({"type": "object", "additionalProperties": true}),
        serde_json::json!({"type": "string", "format": "email-ish"}),
        serde_json::json!({"type": "string", "not": {"enum": ["x"]}}),
        serde_json::json!(true),
    ] {
        let error = rewrite(field(bad.clone())).expect_err(&bad.to_string());
        assert_eq!(path_of(error), "spec.field", "{bad}");
    }
    let error = rewrite(serde_json::json!({
        "type": "array", "items": {"type": "object", "properties": {"x": {}}},
    }))
    .expect_err("untyped item field");
    assert_eq!(error.path, "[].x");
}

#[test]
fn descriptions_are_joined_into_paragraphs() {
    let schema = serde_json::json!({
        "type": "string",
        "description": "one line\nwrapped here\n\nsecond paragraph",
    });
    assert_eq!(
        rewrite(schema).expect("structural")["description"],
        "one line wrapped here\n\nsecond paragraph"
    );
}

/// Every node of the generated CRDs is typed and free of what Kubernetes refuses.
#[test]
fn generated_schemas_are_structural_throughout() {
    fn walk(value: &serde_json::Value, path: &str) {
        let object = value
            .as_object()
            .unwrap_or_else(|| panic!("{path}: not a map"));
        assert!(object.contains_key("type"), "{path}: no type");
        for forbidden in ["$ref", "anyOf", "oneOf", "allOf", "default", "title"] {
            assert!(!object.contains_key(forbidden), "{path}: {forbidden}");
        }
        assert!(!object.contains_key("x-kubernetes-preserve-unknown-fields"));
        if let Some(properties) = object.get("properties").and_then(|p| p.as_object()) {
            for (name, child) in properties {
                walk(child, &format!("{path}.{name}"));
            }
        }
        if let Some(items) = object.get("items") {
            walk(items, &format!("{path}[]"));
        }
    }
    let manifests = crd_manifests().expect("structural");
    assert_eq!(manifests.len(), 2);
    for (manifest, names) in manifests.iter().zip([SERVICE_POLICY, AUTHORIZATION_POLICY]) {
        assert_eq!(manifest["metadata"]["name"], names.crd_name());
        let version = &manifest["spec"]["versions"][0];
        assert_eq!(version["name"], VERSION);
        assert_eq!(version["subresources"]["status"], serde_json::json!({}));
        let schema = &version["schema"]["openAPIV3Schema"];
        walk(schema, names.kind);
        let status = &schema["properties"]["status"]["properties"];
        assert_eq!(status["observedGeneration"]["format"], "int64");
        let condition = &status["conditions"]["items"]["properties"];
        assert_eq!(
            condition["status"]["enum"],
            serde_json::json!(["True", "False", "Unknown"])
        );
    }
    let policy = &manifests[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let spec: Vec<&String> = policy["properties"]["spec"]["properties"]
        .as_object()
        .expect("spec properties")
        .keys()
        .collect();
    let mut expected = [
        "loadBalancer",
        "mtls",
        "timeouts",
        "retries",
        "outlierDetection",
        "circuitBreakers",
        "locality",
        "healthCheck",
        "telemetry",
    ];
    expected.sort();
    let mut spec: Vec<&str> = spec.into_iter().map(String::as_str).collect();
    spec.sort();
    assert_eq!(spec, expected);
    assert_eq!(
        manifests[0]["spec"]["names"]["shortNames"],
        serde_json::json!(["wsp"])
    );
    assert!(manifests[1]["spec"]["names"].get("shortNames").is_none());
}
