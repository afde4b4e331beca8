//! Turns the JSON schema schemars generates (OpenAPI 3 settings, subschemas inlined)
//! into a *structural* schema, the only kind a `apiextensions.k8s.io/v1` CRD accepts.
//!
//! What Kubernetes asks, and what is done for it here:
//! - every node states its `type`: a node without one is an error;
//! - no `$ref`, `$schema` or definitions: the root's are removed, a `$ref` left inside
//!   is an error (generate with `inline_subschemas`);
//! - `nullable: true` instead of a `null` type, in `type: [x, "null"]` or as an
//!   `anyOf`/`oneOf` branch;
//! - no `anyOf`/`oneOf`/`allOf` whose branches carry types the parent does not: one
//!   branch is merged into its parent, branches that are constants of one type
//!   (a Rust enum whose variants have doc comments) become one `enum`, anything else
//!   is an error;
//! - `properties` and `additionalProperties` are exclusive: `additionalProperties:
//!   false` (serde's `deny_unknown_fields`) is dropped, as the API server prunes unknown
//!   fields anyway; `true` would need `x-kubernetes-preserve-unknown-fields` and is an
//!   error;
//! - formats the API server does not know (`uint32`, ...) become `int32`/`int64` with
//!   the Rust type's bounds as `minimum`/`maximum`.
//!
//! Titles (the Rust type's name), defaults and examples are dropped: a default in a
//! CRD is written into every stored object, while Weft's defaults belong to the
//! validation that reads the spec. Descriptions (the doc comments) are kept, their
//! lines joined into paragraphs as `kubectl explain` wraps them itself.
//!
//! The rewriter is strict: a keyword it does not know is an error, so a schemars
//! upgrade that emits something new is noticed when the CRDs are regenerated, not by
//! the API server refusing them.

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("schema at {path}: {reason}")]
pub struct NotStructural {
    /// `(root)`, or the property path (`retries.maxRetries`, `conditions[]`).
    pub path: String,
    pub reason: String,
}

/// Keywords of the generator's root that describe the document, not the object.
const ROOT_ONLY: [&str; 4] = ["$schema", "$defs", "definitions", "components"];
const DROPPED: [&str; 7] = [
    "title",
    "default",
    "examples",
    "example",
    "readOnly",
    "writeOnly",
    "deprecated",
];
const KEPT: [&str; 21] = [
    "type",
    "format",
    "description",
    "nullable",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "properties",
    "required",
    "items",
    "additionalProperties",
];
const TYPES: [&str; 6] = ["object", "array", "string", "integer", "number", "boolean"];
/// Formats the API server validates or at least knows.
const KNOWN_FORMATS: [&str; 10] = [
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "date",
    "date-time",
    "duration",
    "hostname",
    "uuid",
];

/// The structural form of `schema` (a schemars root schema as JSON).
pub fn structural(mut schema: Value) -> Result<Value, NotStructural> {
    if let Value::Object(root) = &mut schema {
        for key in ROOT_ONLY {
            root.remove(key);
        }
    }
    node(schema, "")
}

fn node(value: Value, path: &str) -> Result<Value, NotStructural> {
    let fail = |reason: &str| NotStructural {
        path: if path.is_empty() { "(root)" } else { path }.to_owned(),
        reason: reason.to_owned(),
    };
    let Value::Object(mut object) = value else {
        return Err(fail("a boolean schema has no type"));
    };
    if object.contains_key("$ref") {
        return Err(fail(
            "$ref left in the schema (generate with subschemas inlined)",
        ));
    }
    for key in DROPPED {
        object.remove(key);
    }
    if let Some(Value::String(text)) = object.get_mut("description") {
        *text = paragraphs(text);
    }
    if let Some(constant) = object.remove("const") {
        object.insert("enum".into(), Value::Array(vec![constant]));
    }
    // Alternatives are merged into this node first; the merged node is then taken
    // through the same steps, since its branches' keywords are raw schemars output.
    for keyword in ["anyOf", "oneOf", "allOf"] {
        if let Some(branches) = object.remove(keyword) {
            let Value::Array(branches) = branches else {
                return Err(fail(&format!("{keyword} is not a list")));
            };
            merge_alternatives(&mut object, branches).map_err(|reason| fail(&reason))?;
            return node(Value::Object(object), path);
        }
    }
    if let Some(Value::Array(types)) = object.get("type") {
        let mut types: Vec<Value> = types.clone();
        let count = types.len();
        types.retain(|t| t != "null");
        if types.len() < count {
            object.insert("nullable".into(), Value::Bool(true));
        }
        if types.len() != 1 {
            return Err(fail("several types in one node"));
        }
        object.insert("type".into(), types.remove(0));
    }

    match object.remove("additionalProperties") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            return Err(fail(
                "additionalProperties: true would need x-kubernetes-preserve-unknown-fields",
            ))
        }
        Some(values) => {
            if object.contains_key("properties") {
                return Err(fail("both properties and additionalProperties"));
            }
            let values = node(values, &format!("{path}{{}}"))?;
            object.insert("additionalProperties".into(), values);
        }
    }
    if let Some(properties) = object.remove("properties") {
        let Value::Object(properties) = properties else {
            return Err(fail("properties is not a map"));
        };
        let mut rewritten = Map::new();
        for (name, schema) in properties {
            let child = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            rewritten.insert(name, node(schema, &child)?);
        }
        object.insert("properties".into(), Value::Object(rewritten));
    }
    if let Some(items) = object.remove("items") {
        if !items.is_object() {
            return Err(fail("items must be one schema"));
        }
        object.insert("items".into(), node(items, &format!("{path}[]"))?);
    }
    if object
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        object.remove("required");
    }
    if let Some(format) = object.get("format").and_then(Value::as_str) {
        let format = format.to_owned();
        rewrite_format(&mut object, &format).map_err(|reason| fail(&reason))?;
    }

    match object.get("type").and_then(Value::as_str) {
        Some(t) if TYPES.contains(&t) => {}
        Some(t) => return Err(fail(&format!("type {t:?} is not one Kubernetes knows"))),
        None => return Err(fail("no type")),
    }
    if let Some(key) = object
        .keys()
        .find(|k| !KEPT.contains(&k.as_str()) && !k.starts_with("x-kubernetes-"))
    {
        return Err(fail(&format!("keyword {key:?} is not supported in a CRD")));
    }
    Ok(Value::Object(object))
}

/// `text` with the line breaks inside each paragraph replaced by spaces.
fn paragraphs(text: &str) -> String {
    text.split("\n\n")
        .map(|p| p.lines().map(str::trim).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Folds `branches` (of an anyOf, oneOf or allOf) into `object`.
fn merge_alternatives(object: &mut Map<String, Value>, branches: Vec<Value>) -> Result<(), String> {
    let mut rest = Vec::new();
    for branch in branches {
        let is_null = match &branch {
            Value::Object(b) => {
                b.get("type").is_some_and(|t| t == "null")
                    || (b.len() == 1 && b.get("nullable") == Some(&Value::Bool(true)))
            }
            _ => false,
        };
        if is_null {
            object.insert("nullable".into(), Value::Bool(true));
        } else {
            rest.push(branch);
        }
    }
    if let [Value::Object(only)] = rest.as_slice() {
        // The parent's keywords (the field's description) win over the branch's (the
        // type's description).
        for (key, value) in only {
            object.entry(key.clone()).or_insert_with(|| value.clone());
        }
        return Ok(());
    }
    let mut values = Vec::new();
    let mut kind: Option<Value> = None;
    for branch in &rest {
        let Some(branch) = branch.as_object() else {
            return Err("a boolean schema among alternatives".to_owned());
        };
        let constants = branch
            .get("enum")
            .and_then(Value::as_array)
            .cloned()
            .or_else(|| branch.get("const").map(|c| vec![c.clone()]));
        let only_constants = branch
            .keys()
            .all(|k| ["type", "enum", "const", "description", "title"].contains(&k.as_str()));
        let (Some(constants), true) = (constants, only_constants) else {
            return Err("alternatives of different shapes cannot be structural".to_owned());
        };
        let branch_kind = branch
            .get("type")
            .cloned()
            .unwrap_or_else(|| Value::from("string"));
        if kind.as_ref().is_some_and(|k| *k != branch_kind) {
            return Err("alternatives of different types cannot be structural".to_owned());
        }
        kind = Some(branch_kind);
        values.extend(constants);
    }
    let Some(kind) = kind else {
        return Err("no alternative but null".to_owned());
    };
    object.entry("type").or_insert(kind);
    object.insert("enum".into(), Value::Array(values));
    Ok(())
}

/// Replaces a Rust-specific integer format with one Kubernetes knows, keeping the
/// Rust type's range as bounds; an unknown format is an error.
fn rewrite_format(object: &mut Map<String, Value>, format: &str) -> Result<(), String> {
    let (known, min, max): (&str, Option<i64>, Option<i64>) = match format {
        f if KNOWN_FORMATS.contains(&f) => return Ok(()),
        "uint8" => ("int32", Some(0), Some(u8::MAX.into())),
        "uint16" => ("int32", Some(0), Some(u16::MAX.into())),
        "uint32" => ("int64", Some(0), Some(u32::MAX.into())),
        "uint64" | "uint" => ("int64", Some(0), None),
        "int8" => ("int32", Some(i8::MIN.into()), Some(i8::MAX.into())),
        "int16" => ("int32", Some(i16::MIN.into()), Some(i16::MAX.into())),
        "int" => ("int64", None, None),
        other => return Err(format!("format {other:?} is not one Kubernetes knows")),
    };
    object.insert("format".into(), Value::from(known));
    for (bound, value) in [("minimum", min), ("maximum", max)] {
        if let Some(value) = value {
            object.entry(bound).or_insert(Value::from(value));
        }
    }
    Ok(())
}
