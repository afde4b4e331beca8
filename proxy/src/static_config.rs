//! `--static-config FILE`: the mesh read once from a file instead of a control
//! plane, for a proxy that runs alone (benchmarks, a host without the control
//! plane, debugging). Istio's ztunnel has the same escape hatch (`LOCAL_XDS_PATH`).
//!
//! The file holds the YAML documents `weftctl apply -f` takes, and each resource is
//! validated exactly as a discovery push is ([`crate::discovery::Resources`]); any
//! rejected resource fails startup rather than serving a partial mesh.

use std::path::Path;

use weft_proto::document::{self, Document};
use weft_proto::resource::Kind;
use weft_proto::v1;

use crate::discovery::Resources;
use crate::snapshot::Snapshot;

#[derive(Debug, thiserror::Error)]
pub enum StaticConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: document::ParseError,
    },
    #[error("{path}: rejected {}", rejected.join("; "))]
    Rejected { path: String, rejected: Vec<String> },
}

pub fn load(path: &Path) -> Result<Snapshot, StaticConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| StaticConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text, &shown)
}

/// The snapshot of a file's text; `path` names it in errors.
pub fn parse(text: &str, path: &str) -> Result<Snapshot, StaticConfigError> {
    let documents = document::parse(text).map_err(|source| StaticConfigError::Parse {
        path: path.to_owned(),
        source,
    })?;
    let resources = resources(&documents).map_err(|rejected| StaticConfigError::Rejected {
        path: path.to_owned(),
        rejected,
    })?;
    Ok(resources.snapshot())
}

/// Validates the documents as one push per kind (services first, as the control
/// plane sends them).
fn resources(documents: &[Document]) -> Result<Resources, Vec<String>> {
    let mut resources = Resources::default();
    let mut rejected = Vec::new();
    for kind in Kind::ALL {
        let push = v1::DiscoveryResponse {
            type_url: kind.type_url().to_owned(),
            resources: documents
                .iter()
                .filter(|d| d.kind() == kind)
                .map(|d| v1::Resource {
                    version: 1,
                    ..d.to_resource()
                })
                .collect(),
            ..Default::default()
        };
        rejected.extend(
            resources
                .apply(&push)
                .into_iter()
                .map(|e| format!("{} {}: {}", kind, e.name, e.message)),
        );
    }
    if rejected.is_empty() {
        Ok(resources)
    } else {
        Err(rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESH: &str = "
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{port: 80, protocol: http1}]
  loadBalancer: round_robin
---
kind: Endpoints
metadata: {name: web, namespace: shop}
spec:
  endpoints:
    - {address: 127.0.0.1, port: 8080}
    - {address: 127.0.0.1, port: 8081, weight: 3}
";

    #[test]
    fn a_weftctl_file_becomes_a_snapshot() {
        let documents = document::parse(MESH).expect("parse");
        let snapshot = resources(&documents).expect("valid").snapshot();
        let name = weft_proto::model::ResourceName::new("shop", "web").expect("name");
        assert_eq!(
            snapshot.services[&name].policy,
            crate::snapshot::Policy::RoundRobin
        );
        assert_eq!(snapshot.endpoints[&name].endpoints.endpoints.len(), 2);
    }

    #[test]
    fn routes_in_the_file_are_compiled_for_their_service() {
        // The route comes first in the file; kinds are applied in their order.
        let text = format!(
            "kind: HTTPRoute
metadata: {{name: canary, namespace: shop}}
spec:
  parentRefs: [{{name: web}}]
  rules: [{{matches: [{{headers: [{{name: x-canary, value: '1'}}]}}]}}]
---
{MESH}"
        );
        let documents = document::parse(&text).expect("parse");
        let snapshot = resources(&documents).expect("valid").snapshot();
        let name = weft_proto::model::ResourceName::new("shop", "web").expect("name");
        let routes = snapshot.routes_of(&name).expect("compiled");
        assert!(routes.for_caller(80, "shop").is_some());
    }

    #[test]
    fn an_unsupported_policy_fails_instead_of_serving_part_of_the_mesh() {
        let text = MESH.replace("round_robin", "maglev");
        let documents = document::parse(&text).expect("parse");
        let rejected = resources(&documents).expect_err("rejected");
        assert!(rejected[0].contains("shop/web"), "{rejected:?}");
    }
}
