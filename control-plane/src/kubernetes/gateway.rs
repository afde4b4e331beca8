//! The Gateway API's own HTTPRoute and GRPCRoute (`gateway.networking.k8s.io/v1`) as
//! mesh routes (GAMMA): on Kubernetes, routes are the objects Istio and Linkerd read
//! too, applied with kubectl, and Weft is one more controller of them.
//!
//! A route is the mesh's when one of its `parentRefs` names a Service (`group: ""` or
//! `core`, `kind: Service`); its other parents (Gateways) belong to other controllers
//! and are left out, and a route with no Service parent is ignored. What remains is
//! read as the document `weftctl apply` reads (weft-proto's `document`) and checked
//! by the same model, so a field Weft does not support is refused by name on both
//! entry points.
//!
//! Each route gets a verdict per mesh parent, which [`super::status`] writes to the
//! route's `status.parents` under the controller name [`CONTROLLER`]:
//! - `Accepted`: True; False with reason `UnsupportedValue` and the field in the
//!   message when the spec fails validation; False with `NoMatchingParent` when the
//!   parent Service is not in the mesh, or has no port (or not the one named) that
//!   carries the route's protocol (the check `weftctl apply` makes).
//! - `ResolvedRefs`: False with `BackendNotFound` when a backend (or mirror) names a
//!   Service that is not in the mesh. The route is still served: as the Gateway API
//!   says, the share of requests sent to that backend is answered 500.
//!
//! An invalid route never replaces the last good one: this replica keeps serving the
//! last spec it accepted for that object. The creation timestamp is the object's
//! (the Gateway API's precedence tie-break).

use std::collections::BTreeMap;
use std::sync::Mutex;

use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{ObjectRef, Store as Cache};
use kube::Client;
use prost::Message;
use serde_json::Value;
use tokio::sync::watch;
use weft_proto::document::{
    GrpcRouteDocument, GrpcRouteSpec, HttpRouteDocument, HttpRouteSpec, Metadata,
};
use weft_proto::model::route::{Filter, Route, RouteRule};
use weft_proto::model::{self, Protocol, ResourceName};
use weft_proto::resource::{Body, Kind};
use weft_proto::v1;

use super::watch::{self as watching, resource_version};
use crate::apply::routes::{carries, protocols};
use crate::store::Record;

/// The Services in the mesh (`namespace/name`) and their ports.
pub type Served = BTreeMap<String, Vec<(u16, Protocol)>>;

pub const GROUP: &str = "gateway.networking.k8s.io";
pub const VERSION: &str = "v1";
/// The `controllerName` of the entries Weft writes in a route's `status.parents`.
pub const CONTROLLER: &str = "weft.io/mesh-controller";

/// The two route kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKind {
    Http,
    Grpc,
}

impl RouteKind {
    pub const ALL: [RouteKind; 2] = [RouteKind::Http, RouteKind::Grpc];

    pub fn kind(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            RouteKind::Http => "httproutes",
            RouteKind::Grpc => "grpcroutes",
        }
    }

    pub fn resource(self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(GROUP, VERSION, self.kind()),
            self.plural(),
        )
    }

    fn weft(self) -> Kind {
        match self {
            RouteKind::Http => Kind::HttpRoute,
            RouteKind::Grpc => Kind::GrpcRoute,
        }
    }
}

/// A `parentRefs` entry that names a Service.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshParent {
    /// Its index in the object's `spec.parentRefs`.
    pub index: usize,
    /// The entry as the object has it: the status entry's `parentRef` repeats it.
    pub written: Value,
    /// `namespace/name`.
    pub service: String,
    pub port: Option<u16>,
}

/// A route object read: its mesh parents, and the route they get or why none.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    pub kind: RouteKind,
    pub parents: Vec<MeshParent>,
    pub route: Result<Body, String>,
}

/// Reads a route object; `None` when none of its parents is a Service.
pub fn translate(kind: RouteKind, object: &DynamicObject) -> Option<Translated> {
    let namespace = object.metadata.namespace.as_deref().unwrap_or("default");
    let name = object.metadata.name.as_deref()?;
    let mut spec = object.data.get("spec").cloned().unwrap_or(Value::Null);
    let refs = spec
        .get("parentRefs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let parents: Vec<MeshParent> = refs
        .into_iter()
        .enumerate()
        .filter(|(_, written)| is_service(written))
        .map(|(index, written)| {
            let of = |field: &str| written.get(field).and_then(Value::as_str).unwrap_or("");
            let service = format!(
                "{}/{}",
                Some(of("namespace"))
                    .filter(|n| !n.is_empty())
                    .unwrap_or(namespace),
                of("name")
            );
            let port = written
                .get("port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok());
            MeshParent {
                index,
                written,
                service,
                port,
            }
        })
        .collect();
    if parents.is_empty() {
        return None;
    }
    if let Some(fields) = spec.as_object_mut() {
        let mine = parents.iter().map(|p| p.written.clone()).collect();
        fields.insert("parentRefs".to_owned(), Value::Array(mine));
    }
    let created = object
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| u64::try_from(t.0.as_millisecond()).unwrap_or(0))
        .unwrap_or(0);
    let metadata = Metadata {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        version: None,
        creation_timestamp: None,
    };
    // A parent's index in the model's errors counts the mesh's parents only; the
    // message names the entry as the object numbers it.
    let route = body(kind, metadata, spec, created).map_err(|message| {
        let Some(rest) = message.strip_prefix("spec.parentRefs[") else {
            return message;
        };
        let Some((index, tail)) = rest.split_once(']') else {
            return message;
        };
        match index.parse::<usize>().ok().and_then(|i| parents.get(i)) {
            Some(parent) => format!("spec.parentRefs[{}]{tail}", parent.index),
            None => message,
        }
    });
    Some(Translated {
        kind,
        parents,
        route,
    })
}

/// A parent is a Service when its group is the core one and its kind Service. The
/// Gateway API's defaults are group `gateway.networking.k8s.io` and kind `Gateway`.
fn is_service(parent: &Value) -> bool {
    let group = parent.get("group").and_then(Value::as_str).unwrap_or(GROUP);
    let kind = parent
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("Gateway");
    matches!(group, "" | "core") && kind == "Service"
}

/// The spec as `weftctl apply` reads a document, validated by the same model.
fn body(kind: RouteKind, metadata: Metadata, spec: Value, created: u64) -> Result<Body, String> {
    let unsupported = |e: serde_json::Error| format!("spec: {e}");
    match kind {
        RouteKind::Http => {
            let spec: HttpRouteSpec = serde_json::from_value(spec).map_err(unsupported)?;
            let document = HttpRouteDocument {
                kind: kind.kind().to_owned(),
                metadata,
                spec,
            };
            let mut message = document.to_proto();
            message.creation_timestamp_ms = created;
            model::HttpRoute::try_from(&message)
                .map(Body::HttpRoute)
                .map_err(|invalid| invalid.to_string())
        }
        RouteKind::Grpc => {
            let spec: GrpcRouteSpec = serde_json::from_value(spec).map_err(unsupported)?;
            let document = GrpcRouteDocument {
                kind: kind.kind().to_owned(),
                metadata,
                spec,
            };
            let mut message = document.to_proto();
            message.creation_timestamp_ms = created;
            model::GrpcRoute::try_from(&message)
                .map(Body::GrpcRoute)
                .map_err(|invalid| invalid.to_string())
        }
    }
}

/// The first backend or mirror of a valid route that names no served Service, as
/// the message of `ResolvedRefs: False`.
pub fn unresolved(body: &Body, served: &Served) -> Option<String> {
    match body {
        Body::HttpRoute(route) => unresolved_in(route, served),
        Body::GrpcRoute(route) => unresolved_in(route, served),
        _ => None,
    }
}

fn unresolved_in<R: RouteRule>(route: &Route<R>, served: &Served) -> Option<String> {
    let check = |field: String, service: &ResourceName, port: Option<u16>| {
        let Some(ports) = served.get(&service.to_string()) else {
            return Some(format!(
                "{field}: Service {service} does not exist or is not in the mesh"
            ));
        };
        match port {
            Some(port) if !ports.iter().any(|(p, _)| *p == port) => Some(format!(
                "{field}.port: {port} is not a port of Service {service}"
            )),
            _ => None,
        }
    };
    for (i, rule) in route.rules.iter().enumerate() {
        for (j, backend) in rule.backends().iter().enumerate() {
            let field = format!("spec.rules[{i}].backendRefs[{j}]");
            if let Some(message) = check(field, &backend.service, backend.port) {
                return Some(message);
            }
        }
        for (j, filter) in rule.filters().iter().enumerate() {
            if let Filter::RequestMirror(mirror) = filter {
                let field = format!("spec.rules[{i}].filters[{j}].requestMirror.backendRef");
                if let Some(message) = check(field, &mirror.service, mirror.port) {
                    return Some(message);
                }
            }
        }
    }
    None
}

/// Why a condition is False: its reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

pub const ACCEPTED: &str = "Accepted";
pub const RESOLVED_REFS: &str = "ResolvedRefs";
pub const UNSUPPORTED_VALUE: &str = "UnsupportedValue";
pub const NO_MATCHING_PARENT: &str = "NoMatchingParent";
pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";

/// What the control plane concluded for one mesh parent of a route.
#[derive(Debug, Clone, PartialEq)]
pub struct ParentVerdict {
    pub parent_ref: Value,
    pub accepted: Result<(), Refusal>,
    pub resolved: Result<(), Refusal>,
}

/// What the control plane concluded about one route at one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteVerdict {
    pub generation: i64,
    pub parents: Vec<ParentVerdict>,
}

/// The verdicts of a translated route, given the Services served (`namespace/name`
/// to ports).
pub fn judge(translated: &Translated, served: &Served, generation: i64) -> RouteVerdict {
    let resolved = match &translated.route {
        Ok(body) => match unresolved(body, served) {
            Some(message) => Err(Refusal {
                reason: BACKEND_NOT_FOUND,
                message,
            }),
            None => Ok(()),
        },
        // Nothing is resolved of a route that is not accepted.
        Err(_) => Ok(()),
    };
    let parents = translated
        .parents
        .iter()
        .map(|parent| {
            let accepted = match &translated.route {
                Err(message) => Err(Refusal {
                    reason: UNSUPPORTED_VALUE,
                    message: message.clone(),
                }),
                Ok(_) => {
                    attachable(translated.kind.weft(), parent, served).map_err(|message| Refusal {
                        reason: NO_MATCHING_PARENT,
                        message,
                    })
                }
            };
            ParentVerdict {
                parent_ref: parent.written.clone(),
                accepted,
                resolved: resolved.clone(),
            }
        })
        .collect();
    RouteVerdict {
        generation,
        parents,
    }
}

/// Whether a route of `kind` can attach to `parent`: the Service is in the mesh, and
/// the port (or one of its ports, when none is named) carries the route's protocol,
/// as `weftctl apply` checks.
fn attachable(kind: Kind, parent: &MeshParent, served: &Served) -> Result<(), String> {
    let field = format!("spec.parentRefs[{}]", parent.index);
    let Some(ports) = served.get(&parent.service) else {
        return Err(format!(
            "{field}: Service {} does not exist or is not in the mesh",
            parent.service
        ));
    };
    let listed = || {
        let all: Vec<String> = ports.iter().map(|(p, pr)| format!("{p}/{pr}")).collect();
        all.join(", ")
    };
    match parent.port {
        Some(port) => match ports.iter().find(|(p, _)| *p == port) {
            None => Err(format!(
                "{field}.port: {port} is not a port of Service {} (ports: {})",
                parent.service,
                listed()
            )),
            Some((_, protocol)) if !carries(kind, *protocol) => Err(format!(
                "{field}.port: port {port} of Service {} is {protocol}; a {kind} needs {}",
                parent.service,
                protocols(kind)
            )),
            Some(_) => Ok(()),
        },
        None if !ports.iter().any(|(_, protocol)| carries(kind, *protocol)) => Err(format!(
            "{field}: Service {} has no port a {kind} can steer ({}; it has {})",
            parent.service,
            protocols(kind),
            listed()
        )),
        None => Ok(()),
    }
}

type Key = (RouteKind, String);

pub struct Routes {
    http: Cache<DynamicObject>,
    grpc: Cache<DynamicObject>,
    /// The kinds whose CRD was installed at start: only those are waited for. A
    /// cluster without the Gateway API still gets a mesh; the watch of a missing kind
    /// keeps retrying, and reads routes once the CRDs are installed.
    installed: Vec<RouteKind>,
    /// Per object: the last route accepted. A std Mutex: view builds read and write
    /// it without awaiting.
    last_good: Mutex<BTreeMap<Key, Record>>,
    verdicts: watch::Sender<BTreeMap<Key, RouteVerdict>>,
}

impl Routes {
    pub async fn start(client: Client, revision: watch::Sender<u64>) -> Routes {
        let installed = match client
            .list_api_group_resources(&format!("{GROUP}/{VERSION}"))
            .await
        {
            Ok(list) => RouteKind::ALL
                .into_iter()
                .filter(|kind| list.resources.iter().any(|r| r.name == kind.plural()))
                .collect(),
            Err(error) => {
                tracing::info!(%error, "the Gateway API's CRDs are not installed; routes are read once they are");
                Vec::new()
            }
        };
        let cache = |kind: RouteKind, what: &'static str| {
            watching::start_dynamic(&client, kind.resource(), &revision, what)
        };
        Routes {
            http: cache(RouteKind::Http, "httproutes.gateway.networking.k8s.io"),
            grpc: cache(RouteKind::Grpc, "grpcroutes.gateway.networking.k8s.io"),
            installed,
            last_good: Mutex::new(BTreeMap::new()),
            verdicts: watch::channel(BTreeMap::new()).0,
        }
    }

    fn cache(&self, kind: RouteKind) -> &Cache<DynamicObject> {
        match kind {
            RouteKind::Http => &self.http,
            RouteKind::Grpc => &self.grpc,
        }
    }

    pub async fn wait_until_ready(
        &self,
    ) -> Result<(), kube::runtime::reflector::store::WriterDropped> {
        for kind in &self.installed {
            self.cache(*kind).wait_until_ready().await?;
        }
        Ok(())
    }

    pub fn verdicts(&self) -> watch::Receiver<BTreeMap<Key, RouteVerdict>> {
        self.verdicts.subscribe()
    }

    /// The cached object, for the status writer.
    pub fn object(&self, kind: RouteKind, name: &str) -> Option<std::sync::Arc<DynamicObject>> {
        let (namespace, name) = name.split_once('/')?;
        let key = ObjectRef::new_with(name, kind.resource()).within(namespace);
        self.cache(kind).get(&key)
    }

    /// The route records to serve, each judged against `services` (the weft Services
    /// being served).
    pub fn records(&self, services: &[&Record]) -> Vec<Record> {
        let mut served = Served::new();
        for record in services {
            let Ok(message) = v1::Service::decode(record.body.as_slice()) else {
                continue;
            };
            // Served services passed this validation already.
            if let Ok(service) = model::Service::try_from(&message) {
                let ports = service.ports.iter().map(|p| (p.port, p.protocol)).collect();
                served.insert(record.name.clone(), ports);
            }
        }
        let Ok(mut last_good) = self.last_good.lock() else {
            return Vec::new();
        };
        let mut records = Vec::new();
        let mut verdicts = BTreeMap::new();
        for kind in RouteKind::ALL {
            for object in self.cache(kind).state() {
                let Some(translated) = translate(kind, &object) else {
                    continue;
                };
                let full = format!(
                    "{}/{}",
                    object.metadata.namespace.as_deref().unwrap_or_default(),
                    object.metadata.name.as_deref().unwrap_or_default()
                );
                let generation = object.metadata.generation.unwrap_or(0);
                verdicts.insert(
                    (kind, full.clone()),
                    judge(&translated, &served, generation),
                );
                match &translated.route {
                    Ok(body) => {
                        let record = Record {
                            kind: kind.weft(),
                            name: full.clone(),
                            version: resource_version(object.as_ref()),
                            body: body.encode(),
                        };
                        last_good.insert((kind, full), record.clone());
                        records.push(record);
                    }
                    Err(_) => records.extend(last_good.get(&(kind, full)).cloned()),
                }
            }
        }
        // A deleted route's last good spec goes with it (and one no longer the mesh's).
        last_good.retain(|key, _| verdicts.contains_key(key));
        self.verdicts.send_if_modified(|current| {
            if *current == verdicts {
                return false;
            }
            *current = verdicts;
            true
        });
        records
    }
}

#[cfg(test)]
mod tests;
