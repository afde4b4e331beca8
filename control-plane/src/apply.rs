//! Validation of admin writes, and the write itself.
//!
//! Each body is decoded and validated on its own (weft-proto's model), then checked
//! against the rest of the mesh: endpoints need their service and must name its ports;
//! two services may not claim the same virtual address or host name; an authorization
//! policy must protect an existing service (and one of its ports); a route must attach
//! to existing services and send to existing ones ([`routes`]). Bodies are stored
//! re-encoded from the validated value, so equivalent documents are byte-identical and
//! applying the same file twice changes nothing. Writes are serialized, so the checks
//! and the write see the same state.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use prost::Message;
use tokio::sync::Mutex;
use tonic::Status;
use weft_proto::model::{AuthorizationPolicy, Endpoints, Service};
use weft_proto::resource::{self, Body, Kind};
use weft_proto::v1;

use crate::store::{Outcome, Store, StoreError, Write};

pub(crate) mod routes;

pub struct Applier {
    store: Arc<dyn Store>,
    // A tokio Mutex: it is held across the store's awaits, on purpose.
    write_lock: Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ApplyError> for Status {
    fn from(e: ApplyError) -> Status {
        match e {
            ApplyError::Invalid(message) => Status::invalid_argument(message),
            ApplyError::Store(e) => e.status(),
        }
    }
}

impl Applier {
    pub fn new(store: Arc<dyn Store>) -> Applier {
        Applier {
            store,
            write_lock: Mutex::new(()),
        }
    }

    pub async fn apply(
        &self,
        resources: &[v1::Resource],
    ) -> Result<Vec<v1::ApplyResult>, ApplyError> {
        let mut bodies: Vec<Body> = Vec::with_capacity(resources.len());
        for (i, resource) in resources.iter().enumerate() {
            let body = resource::decode_resource(resource)
                .map_err(|e| ApplyError::Invalid(format!("resources[{i}]: {e}")))?;
            refuse_managed(body.kind())?;
            if bodies
                .iter()
                .any(|b| b.kind() == body.kind() && b.name() == body.name())
            {
                return Err(ApplyError::Invalid(format!(
                    "resources[{i}]: {} {} appears twice in one request",
                    body.kind(),
                    body.name()
                )));
            }
            bodies.push(body);
        }
        let _guard = self.write_lock.lock().await;
        let services = self.services_after(&bodies).await?;
        check_services(&services)?;
        for body in &bodies {
            match body {
                Body::Endpoints(endpoints) => check_endpoints(endpoints, &services)?,
                Body::AuthorizationPolicy(policy) => check_policy(policy, &services)?,
                Body::HttpRoute(_) | Body::GrpcRoute(_) => routes::check(body, &services)?,
                _ => {}
            }
        }
        for body in &mut bodies {
            routes::stamp(self.store.as_ref(), body).await?;
        }
        let writes = bodies
            .iter()
            .map(|body| Write {
                kind: body.kind(),
                name: body.name().to_string(),
                body: encode(body),
            })
            .collect();
        let outcomes = self.store.apply(writes).await?;
        Ok(bodies
            .iter()
            .zip(outcomes)
            .map(|(body, (outcome, version))| v1::ApplyResult {
                type_url: body.kind().type_url().to_owned(),
                name: body.name().to_string(),
                outcome: match outcome {
                    Outcome::Created => v1::apply_result::Outcome::Created,
                    Outcome::Updated => v1::apply_result::Outcome::Updated,
                    Outcome::Unchanged => v1::apply_result::Outcome::Unchanged,
                } as i32,
                version,
            })
            .collect())
    }

    pub async fn delete(&self, kind: Kind, name: &str) -> Result<Option<u64>, ApplyError> {
        refuse_managed(kind)?;
        let _guard = self.write_lock.lock().await;
        Ok(self.store.delete(kind, name).await?)
    }

    /// Every service as it will be once `bodies` are written.
    async fn services_after(
        &self,
        bodies: &[Body],
    ) -> Result<BTreeMap<String, Service>, ApplyError> {
        let mut services = BTreeMap::new();
        for record in self.store.list(Kind::Service).await? {
            let message = v1::Service::decode(record.body.as_slice())
                .map_err(|e| StoreError::Corrupt(format!("service {}: {e}", record.name)))?;
            let service = Service::try_from(&message)
                .map_err(|e| StoreError::Corrupt(format!("service {}: {e}", record.name)))?;
            services.insert(record.name, service);
        }
        for body in bodies {
            if let Body::Service(service) = body {
                services.insert(service.name.to_string(), service.clone());
            }
        }
        Ok(services)
    }
}

/// The trust bundle follows the CA's state; an operator's write would make proxies
/// trust a root the CA does not know (or drop one it signs with).
fn refuse_managed(kind: Kind) -> Result<(), ApplyError> {
    if kind == Kind::TrustBundle {
        return Err(ApplyError::Invalid(
            "TrustBundle is managed by the control plane's CA; use `weftctl ca rotate` and `weftctl ca finish-rotation`".to_owned(),
        ));
    }
    Ok(())
}

fn encode(body: &Body) -> Vec<u8> {
    body.encode()
}

/// No two services may claim one virtual address and port, or one host name.
fn check_services(services: &BTreeMap<String, Service>) -> Result<(), ApplyError> {
    let mut addresses: HashMap<SocketAddr, &str> = HashMap::new();
    let mut hosts: HashMap<&str, &str> = HashMap::new();
    for (name, service) in services {
        for ip in &service.virtual_ips {
            for port in &service.ports {
                let address = SocketAddr::new(*ip, port.port);
                if let Some(other) = addresses.insert(address, name) {
                    return Err(ApplyError::Invalid(format!(
                        "Service {name}: virtual_ips: {address} is already used by service {other}"
                    )));
                }
            }
        }
        for host in &service.hostnames {
            if let Some(other) = hosts.insert(host, name) {
                return Err(ApplyError::Invalid(format!(
                    "Service {name}: hostnames: {host:?} is already used by service {other}"
                )));
            }
        }
    }
    Ok(())
}

fn check_endpoints(
    endpoints: &Endpoints,
    services: &BTreeMap<String, Service>,
) -> Result<(), ApplyError> {
    let name = endpoints.name.to_string();
    let Some(service) = services.get(&name) else {
        return Err(ApplyError::Invalid(format!(
            "Endpoints {name}: service {name} does not exist (apply the Service first, or in the same request)"
        )));
    };
    for (i, endpoint) in endpoints.endpoints.iter().enumerate() {
        if service.port_named(&endpoint.port_name).is_none() {
            let ports: Vec<&str> = service.ports.iter().map(|p| p.name.as_str()).collect();
            return Err(ApplyError::Invalid(format!(
                "Endpoints {name}: endpoints[{i}].port_name: {:?} is not a port of service {name} (ports: {})",
                endpoint.port_name,
                ports.join(", ")
            )));
        }
    }
    Ok(())
}

/// A policy for a service that does not exist would protect nothing, most likely
/// because of a typo; refusing it is safer than letting the operator believe the
/// service is closed. Deleting the service later leaves the policy in place, so that
/// a re-created service is protected again at once.
fn check_policy(
    policy: &AuthorizationPolicy,
    services: &BTreeMap<String, Service>,
) -> Result<(), ApplyError> {
    let name = &policy.name;
    let target = policy.service.to_string();
    let Some(service) = services.get(&target) else {
        return Err(ApplyError::Invalid(format!(
            "AuthorizationPolicy {name}: service: service {target} does not exist (apply the Service first, or in the same request)"
        )));
    };
    if let Some(port) = policy.port {
        if !service.ports.iter().any(|p| p.port == port) {
            let ports: Vec<String> = service.ports.iter().map(|p| p.port.to_string()).collect();
            return Err(ApplyError::Invalid(format!(
                "AuthorizationPolicy {name}: port: {port} is not a port of service {target} (ports: {})",
                ports.join(", ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
