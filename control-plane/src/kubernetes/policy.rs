//! Weft's own kinds as CRDs in `weft.io`: `ServicePolicy` (the policy of the
//! Kubernetes Service of the same name) and `AuthorizationPolicy`.
//!
//! One validation, two entry points: an object is turned into the weft.v1 message a
//! `weftctl apply` would send and checked by the same rules (weft-proto's model, and
//! the check that a policy protects an existing service and port). Each object gets a
//! verdict, `Accepted` or `Invalid` with the field named as the object spells it
//! (`spec.retries.maxRetries`), which [`super::status`] writes to its
//! `status.conditions`. An invalid object never replaces the last good one: this
//! replica keeps serving the last spec it accepted for that object.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{ObjectRef, Store as Cache};
use kube::{Api, Client};
use prost::Message;
use tokio::sync::watch;
use weft_proto::document::{AuthorizationPolicySpec, ServicePolicySpec};
use weft_proto::model::{self, Invalid};
use weft_proto::resource::Kind;
use weft_proto::v1;

use super::watch::{self as watching, resource_version};
use crate::store::{Outcome, Record, StoreError};

pub const GROUP: &str = "weft.io";
pub const VERSION: &str = "v1alpha1";
/// The field manager of what the control plane writes for `weftctl apply`.
const MANAGER: &str = "weftctl";

/// The two CRDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Crd {
    ServicePolicy,
    AuthorizationPolicy,
}

impl Crd {
    pub fn kind(self) -> &'static str {
        match self {
            Crd::ServicePolicy => "ServicePolicy",
            Crd::AuthorizationPolicy => "AuthorizationPolicy",
        }
    }

    pub fn resource(self) -> ApiResource {
        let plural = match self {
            Crd::ServicePolicy => "servicepolicies",
            Crd::AuthorizationPolicy => "authorizationpolicies",
        };
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(GROUP, VERSION, self.kind()),
            plural,
        )
    }

    /// The CRD that holds a weft kind on Kubernetes.
    fn of(kind: Kind) -> Option<Crd> {
        match kind {
            Kind::Service => Some(Crd::ServicePolicy),
            Kind::AuthorizationPolicy => Some(Crd::AuthorizationPolicy),
            _ => None,
        }
    }
}

/// What the control plane concluded about one object at one generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub generation: i64,
    /// `Err(message)` names the field.
    pub accepted: Result<(), String>,
}

/// A ServicePolicy spec that passed validation, and the version it came with.
#[derive(Debug, Clone)]
pub struct Accepted<T> {
    pub spec: Arc<T>,
    pub version: u64,
}

type Key = (Crd, String);

pub struct Policies {
    service_policies: Cache<DynamicObject>,
    authorizations: Cache<DynamicObject>,
    /// Per object (`namespace/name`): the last spec accepted. A std Mutex: view builds
    /// read and write it without awaiting.
    last_good_services: Mutex<BTreeMap<String, Accepted<ServicePolicySpec>>>,
    last_good_authorizations: Mutex<BTreeMap<String, Record>>,
    verdicts: watch::Sender<BTreeMap<Key, Verdict>>,
}

impl Policies {
    pub fn start(client: Client, revision: watch::Sender<u64>) -> Policies {
        let cache = |crd: Crd, what: &'static str| {
            watching::start_dynamic(&client, crd.resource(), &revision, what)
        };
        Policies {
            service_policies: cache(Crd::ServicePolicy, "servicepolicies.weft.io"),
            authorizations: cache(Crd::AuthorizationPolicy, "authorizationpolicies.weft.io"),
            last_good_services: Mutex::new(BTreeMap::new()),
            last_good_authorizations: Mutex::new(BTreeMap::new()),
            verdicts: watch::channel(BTreeMap::new()).0,
        }
    }

    pub async fn wait_until_ready(
        &self,
    ) -> Result<(), kube::runtime::reflector::store::WriterDropped> {
        self.service_policies.wait_until_ready().await?;
        self.authorizations.wait_until_ready().await
    }

    pub fn verdicts(&self) -> watch::Receiver<BTreeMap<Key, Verdict>> {
        self.verdicts.subscribe()
    }

    /// The cached object, for the status writer.
    pub fn object(&self, crd: Crd, name: &str) -> Option<Arc<DynamicObject>> {
        let (namespace, name) = name.split_once('/')?;
        let key = ObjectRef::new_with(name, crd.resource()).within(namespace);
        match crd {
            Crd::ServicePolicy => self.service_policies.get(&key),
            Crd::AuthorizationPolicy => self.authorizations.get(&key),
        }
    }

    fn judge(&self, key: Key, verdict: Verdict) {
        self.verdicts.send_if_modified(|verdicts| {
            if verdicts.get(&key) == Some(&verdict) {
                return false;
            }
            verdicts.insert(key, verdict);
            true
        });
    }

    /// The policy to apply to the weft Service `base` (built from the Kubernetes
    /// Service `namespace/name`): its ServicePolicy when that is valid, else the last
    /// one of it this replica accepted, else none.
    pub fn service_policy(
        &self,
        namespace: &str,
        name: &str,
        base: &v1::Service,
    ) -> Option<Accepted<ServicePolicySpec>> {
        let full = format!("{namespace}/{name}");
        let Some(object) = self.object(Crd::ServicePolicy, &full) else {
            // A deleted policy's last good spec goes with it: one created again later
            // starts afresh.
            if let Ok(mut last_good) = self.last_good_services.lock() {
                last_good.remove(&full);
            }
            return None;
        };
        let generation = object.metadata.generation.unwrap_or(0);
        let checked = spec::<ServicePolicySpec>(&object).and_then(|spec| {
            let mut candidate = base.clone();
            spec.apply_to(&mut candidate);
            model::Service::try_from(&candidate)
                .map(|_| spec)
                .map_err(|invalid| field_message(&invalid))
        });
        let mut last_good = self.last_good_services.lock().ok()?;
        let accepted = match checked {
            Ok(spec) => {
                let accepted = Accepted {
                    spec: Arc::new(spec),
                    version: resource_version(object.as_ref()),
                };
                last_good.insert(full.clone(), accepted.clone());
                self.judge(
                    (Crd::ServicePolicy, full),
                    Verdict {
                        generation,
                        accepted: Ok(()),
                    },
                );
                Some(accepted)
            }
            Err(message) => {
                self.judge(
                    (Crd::ServicePolicy, full.clone()),
                    Verdict {
                        generation,
                        accepted: Err(message),
                    },
                );
                last_good.get(&full).cloned()
            }
        };
        accepted
    }

    /// The AuthorizationPolicy records to serve, each checked against `services` (the
    /// weft Services being served) as an admin write would be.
    pub fn authorization_records(&self, services: &[&Record]) -> Vec<Record> {
        let mut ports: BTreeMap<&str, Vec<u16>> = BTreeMap::new();
        for record in services {
            if let Ok(service) = v1::Service::decode(record.body.as_slice()) {
                ports.insert(
                    &record.name,
                    service
                        .ports
                        .iter()
                        .filter_map(|p| u16::try_from(p.port).ok())
                        .collect(),
                );
            }
        }
        let Ok(mut last_good) = self.last_good_authorizations.lock() else {
            return Vec::new();
        };
        let mut records = Vec::new();
        let mut present = Vec::new();
        for object in self.authorizations.state() {
            let namespace = object.metadata.namespace.clone().unwrap_or_default();
            let name = object.metadata.name.clone().unwrap_or_default();
            let full = format!("{namespace}/{name}");
            present.push(full.clone());
            let generation = object.metadata.generation.unwrap_or(0);
            let checked = spec::<AuthorizationPolicySpec>(&object).and_then(|spec| {
                let message = v1::AuthorizationPolicy {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    service: spec.service.clone(),
                    port: spec.port,
                    allow: spec.allow.clone(),
                    default_action: spec.default_action.clone(),
                };
                let policy = model::AuthorizationPolicy::try_from(&message)
                    .map_err(|invalid| field_message(&invalid))?;
                let target = policy.service.to_string();
                let Some(target_ports) = ports.get(target.as_str()) else {
                    return Err(format!(
                        "spec.service: Service {target} does not exist or is not served"
                    ));
                };
                if let Some(port) = policy.port {
                    if !target_ports.contains(&port) {
                        return Err(format!(
                            "spec.port: {port} is not a port of Service {target}"
                        ));
                    }
                }
                Ok(message)
            });
            match checked {
                Ok(message) => {
                    let record = Record {
                        kind: Kind::AuthorizationPolicy,
                        name: full.clone(),
                        version: resource_version(object.as_ref()),
                        body: message.encode_to_vec(),
                    };
                    last_good.insert(full.clone(), record.clone());
                    self.judge(
                        (Crd::AuthorizationPolicy, full),
                        Verdict {
                            generation,
                            accepted: Ok(()),
                        },
                    );
                    records.push(record);
                }
                Err(message) => {
                    if let Some(record) = last_good.get(&full) {
                        records.push(record.clone());
                    }
                    self.judge(
                        (Crd::AuthorizationPolicy, full),
                        Verdict {
                            generation,
                            accepted: Err(message),
                        },
                    );
                }
            }
        }
        // A deleted object's last good spec goes with it.
        last_good.retain(|name, _| present.contains(name));
        records
    }
}

/// An object's `spec`, decoded; a decoding error names the field.
fn spec<T: serde::de::DeserializeOwned>(object: &DynamicObject) -> Result<T, String> {
    let spec = object
        .data
        .get("spec")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    serde_json::from_value(spec).map_err(|e| format!("spec: {e}"))
}

/// A model error (`retries.max_retries: ...`) as the object spells the field
/// (`spec.retries.maxRetries: ...`).
pub fn field_message(invalid: &Invalid) -> String {
    let field: Vec<String> = invalid.field.split('.').map(camel_case).collect();
    if invalid.field.is_empty() {
        format!("spec: {}", invalid.reason)
    } else {
        format!("spec.{}: {}", field.join("."), invalid.reason)
    }
}

fn camel_case(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    let mut upper = false;
    for c in segment.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Writes the CRD object behind an admin write of a weft kind (server-side apply, so
/// fields other managers own are left alone). Returns what happened and the object's
/// new version.
pub async fn write(
    client: &Client,
    kind: Kind,
    name: &str,
    body: &[u8],
) -> Result<(Outcome, u64), StoreError> {
    let crd = Crd::of(kind).ok_or_else(|| StoreError::Unsupported(format!("{kind} has no CRD")))?;
    let (namespace, short) = name
        .split_once('/')
        .ok_or_else(|| StoreError::Unsupported(format!("{name:?} is not namespace/name")))?;
    let corrupt = |e: prost::DecodeError| StoreError::Corrupt(format!("{kind} {name}: {e}"));
    let spec = match kind {
        Kind::Service => {
            let message = v1::Service::decode(body).map_err(corrupt)?;
            serde_json::to_value(ServicePolicySpec::from_service(&message))
        }
        _ => {
            let message = v1::AuthorizationPolicy::decode(body).map_err(corrupt)?;
            serde_json::to_value(AuthorizationPolicySpec {
                service: message.service,
                port: message.port,
                allow: message.allow,
                default_action: message.default_action,
            })
        }
    }
    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let resource = crd.resource();
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource);
    let before = api.get_opt(short).await.map_err(unavailable)?;
    let mut object = DynamicObject::new(short, &resource).data(serde_json::json!({ "spec": spec }));
    object.metadata = ObjectMeta {
        name: Some(short.to_owned()),
        namespace: Some(namespace.to_owned()),
        ..Default::default()
    };
    let written = api
        .patch(
            short,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .map_err(unavailable)?;
    let version = resource_version(&written);
    let outcome = match before {
        None => Outcome::Created,
        Some(before) if resource_version(&before) == version => Outcome::Unchanged,
        Some(_) => Outcome::Updated,
    };
    Ok((outcome, version))
}

pub async fn delete(client: &Client, kind: Kind, name: &str) -> Result<Option<u64>, StoreError> {
    let crd = Crd::of(kind).ok_or_else(|| StoreError::Unsupported(format!("{kind} has no CRD")))?;
    let Some((namespace, short)) = name.split_once('/') else {
        return Ok(None);
    };
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &crd.resource());
    match api.delete(short, &DeleteParams::default()).await {
        Ok(either) => Ok(Some(
            either.left().map(|o| resource_version(&o)).unwrap_or(0),
        )),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(e) => Err(unavailable(e)),
    }
}

fn unavailable(e: kube::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_fields_are_named_as_the_object_spells_them() {
        let invalid = Invalid::new("retries.max_retries", "must be at most 10");
        assert_eq!(
            field_message(&invalid),
            "spec.retries.maxRetries: must be at most 10"
        );
        let invalid = Invalid::new("allow[1]", "not a SPIFFE ID");
        assert_eq!(field_message(&invalid), "spec.allow[1]: not a SPIFFE ID");
    }
}
