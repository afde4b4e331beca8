//! The mesh `explain` reads: services, endpoints, policies and compiled routes,
//! validated by the same conversions a proxy applies to a push.
//!
//! Two sources give the same shape: the control plane's resources (Admin `List`,
//! as `v1::Resource`s) and a proxy's `/config_dump`, whose `resources.documents`,
//! `http_routes` and `grpc_routes` are the documents `weftctl apply` reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use weft_proto::document::{self, Document};
use weft_proto::model::route::ServiceRoutes;
use weft_proto::model::{
    AuthorizationPolicy, Endpoints, GrpcRoute, HttpRoute, ResourceName, Service, TrustDomain,
};
use weft_proto::resource::{self, Body};
use weft_proto::v1;

use super::EndpointStates;

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("{0}")]
    Resource(String),
    #[error("the config dump has no {0} (is it a weft-proxy's /config_dump?)")]
    Dump(&'static str),
}

/// Everything `explain` reads about the mesh.
#[derive(Debug, Default)]
pub struct Mesh {
    pub services: BTreeMap<ResourceName, Arc<Service>>,
    pub endpoints: BTreeMap<ResourceName, Endpoints>,
    /// Sorted by name: the order decisions are made in.
    pub policies: BTreeMap<ResourceName, AuthorizationPolicy>,
    pub routes: HashMap<ResourceName, Arc<ServiceRoutes>>,
    /// What a proxy knows of endpoints beyond their health (ejected, draining).
    pub endpoint_states: EndpointStates,
    /// The trust domain of the proxy a dump came from, for `ns/sa` sources.
    pub trust_domain: Option<TrustDomain>,
    /// The identity and namespace of the proxy a dump came from, when the source is
    /// that proxy's own workload.
    pub local_identity: Option<String>,
}

impl Mesh {
    /// From the control plane's resources (trust bundles are ignored).
    pub fn from_resources(resources: &[v1::Resource]) -> Result<Mesh, MeshError> {
        let mut mesh = Mesh::default();
        let mut http: Vec<Arc<HttpRoute>> = Vec::new();
        let mut grpc: Vec<Arc<GrpcRoute>> = Vec::new();
        for resource in resources {
            let body = resource::decode_resource(resource)
                .map_err(|e| MeshError::Resource(format!("{}: {e}", resource.name)))?;
            match body {
                Body::Service(s) => {
                    mesh.services.insert(s.name.clone(), Arc::new(s));
                }
                Body::Endpoints(e) => {
                    mesh.endpoints.insert(e.name.clone(), e);
                }
                Body::AuthorizationPolicy(p) => {
                    mesh.policies.insert(p.name.clone(), p);
                }
                Body::HttpRoute(r) => http.push(Arc::new(r)),
                Body::GrpcRoute(r) => grpc.push(Arc::new(r)),
                Body::TrustBundle(b) => mesh.trust_domain = Some(b.trust_domain),
            }
        }
        mesh.routes =
            ServiceRoutes::compile_all(mesh.services.values().map(|s| s.as_ref()), &http, &grpc)
                .into_iter()
                .map(|(name, routes)| (name, Arc::new(routes)))
                .collect();
        Ok(mesh)
    }

    /// From documents, as `weftctl apply` reads them.
    pub fn from_documents(documents: &[Document]) -> Result<Mesh, MeshError> {
        let resources: Vec<v1::Resource> = documents.iter().map(Document::to_resource).collect();
        Mesh::from_resources(&resources)
    }

    /// From a proxy's `/config_dump`.
    pub fn from_config_dump(dump: &serde_json::Value) -> Result<Mesh, MeshError> {
        let resources = dump.get("resources").ok_or(MeshError::Dump("resources"))?;
        let documents = resources
            .get("documents")
            .and_then(|d| d.as_array())
            .ok_or(MeshError::Dump("resources.documents"))?;
        let routes = ["http_routes", "grpc_routes"]
            .iter()
            .filter_map(|key| resources.get(key).and_then(|r| r.as_array()))
            .flatten();
        let mut parsed = Vec::new();
        for value in documents.iter().chain(routes) {
            // JSON is YAML: the documents read back through `apply`'s own parser.
            let text = value.to_string();
            let mut read =
                document::parse(&text).map_err(|e| MeshError::Resource(e.to_string()))?;
            parsed.append(&mut read);
        }
        let mut mesh = Mesh::from_documents(&parsed)?;
        mesh.trust_domain = dump
            .pointer("/identity/trust_domain")
            .and_then(|t| t.as_str())
            .and_then(|t| TrustDomain::new(t).ok());
        mesh.local_identity = dump
            .pointer("/identity/spiffe_id")
            .and_then(|t| t.as_str())
            .map(str::to_owned);
        if let Some(services) = resources.get("endpoints").and_then(|e| e.as_array()) {
            for service in services {
                let Some(name) = service
                    .get("name")
                    .and_then(|n| n.as_str())
                    .and_then(|n| ResourceName::parse(n).ok())
                else {
                    continue;
                };
                let endpoints = service.get("endpoints").and_then(|e| e.as_array());
                for endpoint in endpoints.into_iter().flatten() {
                    let state = endpoint.get("state").and_then(|s| s.as_str());
                    let address = endpoint.get("address").and_then(|a| a.as_str());
                    if let (Some(state), Some(address)) = (state, address) {
                        mesh.endpoint_states
                            .insert((name.clone(), address.to_owned()), state.to_owned());
                    }
                }
            }
        }
        Ok(mesh)
    }
}
