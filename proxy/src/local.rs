//! The local workload: which services the app behind this proxy serves, and on which
//! of its ports. The inbound side looks each connection's dialled port up here for
//! the protocol to speak, the mTLS mode, whose authorization policies apply
//! ([`crate::dataplane::authz`]) and the `service` label of its metrics.
//!
//! It is resolved once per snapshot ([`crate::dataplane::registry::Registry::apply`]),
//! from one of two sources:
//! - `--service` (hosts without Kubernetes): the flags name one service and its
//!   ports, which the proxy also registers ([`Local::declared`]). Every inbound port
//!   is that service's, as it always was.
//! - `--workload-address` alone (Kubernetes: the pod IP): [`membership`] learns the
//!   services from the snapshot, where the control plane put the pod's EndpointSlice
//!   entries. A pod may serve several services, each on its own ports; a port no
//!   service owns has none (PERMISSIVE, protocol detected, no policy).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use weft_proto::model::{MtlsMode, Protocol, ResourceName};

use crate::config::Workload;
use crate::snapshot::Snapshot;

/// What the inbound side knows of the local workload in one snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Local {
    /// By the port a client dials: the workload port its endpoint announces. (A
    /// B-tree: a handful of entries, looked up as fast as a hash and listed in order.)
    pub ports: BTreeMap<u16, LocalPort>,
    /// Every other port.
    pub other: LocalPort,
}

/// How the local workload serves one port.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalPort {
    /// The services that own the port, by name.
    pub owners: Vec<Owner>,
    /// The protocol declared for it: the first owner's, the first name winning a
    /// conflict as it does for virtual IPs; `None`: detected.
    pub protocol: Option<Protocol>,
    /// The strictest of the owners' modes, so a port that two services share is as
    /// closed as the stricter one; PERMISSIVE for a port no known service owns.
    pub mtls: MtlsMode,
    /// The `service` label of its inbound metrics: the first owner's name, empty
    /// for none. One per local service, so the label's values stay few.
    pub service: Arc<str>,
}

/// A service that owns a local port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub service: ResourceName,
    /// The service ports served there (several when they share a target port);
    /// empty when none is known, and then only the service's policies without a
    /// port apply.
    pub ports: Vec<u16>,
}

impl Default for LocalPort {
    fn default() -> LocalPort {
        LocalPort {
            owners: Vec::new(),
            protocol: None,
            mtls: MtlsMode::default(),
            service: Arc::from(""),
        }
    }
}

impl Local {
    /// How the port a client dialled is served.
    pub fn port(&self, port: u16) -> &LocalPort {
        self.ports.get(&port).unwrap_or(&self.other)
    }

    /// Every service the workload serves, by name.
    pub fn services(&self) -> BTreeSet<&ResourceName> {
        self.ports
            .values()
            .chain([&self.other])
            .flat_map(|port| port.owners.iter().map(|owner| &owner.service))
            .collect()
    }

    /// The workload `--service` declares: each `--workload-port` serves the service
    /// port of its name, and every other port belongs to the service too (its mTLS
    /// mode and its policies without a port apply there).
    pub fn declared(snapshot: &Snapshot, namespace: &str, workload: &Workload) -> Local {
        let Ok(name) = ResourceName::new(namespace, &workload.service) else {
            return Local::default();
        };
        let service = snapshot.services.get(&name).map(|view| &view.service);
        let mut ports = BTreeMap::new();
        for local in &workload.ports {
            let declared = service.and_then(|s| s.port_named(&local.name));
            let owner = Owner {
                service: name.clone(),
                ports: declared.map(|p| p.port).into_iter().collect(),
            };
            // The first of two flags for one port wins, as it always did.
            ports
                .entry(local.port)
                .or_insert_with(|| LocalPort::owned_by(vec![owner], snapshot));
        }
        let other = Owner {
            service: name,
            ports: Vec::new(),
        };
        Local {
            ports,
            other: LocalPort::owned_by(vec![other], snapshot),
        }
    }
}

/// The local workload of the pod at `address`: every service with an endpoint at
/// that IP owns that endpoint's port, serving the service port the endpoint names.
/// Endpoints count whatever their health: a pod not ready yet, or terminating,
/// still serves its services, and must not open its ports meanwhile.
pub fn membership(snapshot: &Snapshot, address: IpAddr) -> Local {
    let mut found: BTreeMap<u16, BTreeMap<&ResourceName, BTreeSet<u16>>> = BTreeMap::new();
    for (name, view) in &snapshot.endpoints {
        let service = snapshot.services.get(name).map(|view| &view.service);
        for endpoint in &view.endpoints.endpoints {
            if endpoint.address.ip() != address {
                continue;
            }
            let served = found
                .entry(endpoint.address.port())
                .or_default()
                .entry(name)
                .or_default();
            // A service this proxy does not hold (yet) still owns the port: its
            // policies without a port apply.
            if let Some(port) = service.and_then(|s| s.port_named(&endpoint.port_name)) {
                served.insert(port.port);
            }
        }
    }
    let ports = found
        .into_iter()
        .map(|(port, owners)| {
            let owners = owners
                .into_iter()
                .map(|(service, ports)| Owner {
                    service: service.clone(),
                    ports: ports.into_iter().collect(),
                })
                .collect();
            (port, LocalPort::owned_by(owners, snapshot))
        })
        .collect();
    Local {
        ports,
        other: LocalPort::default(),
    }
}

impl LocalPort {
    /// A port owned by `owners`, given by name.
    fn owned_by(owners: Vec<Owner>, snapshot: &Snapshot) -> LocalPort {
        let service = |owner: &Owner| snapshot.services.get(&owner.service);
        let protocol = owners.iter().find_map(|owner| {
            let declared = &service(owner)?.service;
            let port = owner.ports.first()?;
            declared.ports.iter().find(|p| p.port == *port)
        });
        let mtls = owners
            .iter()
            .map(|owner| {
                service(owner)
                    .map(|view| view.service.mtls)
                    .unwrap_or_default()
            })
            .max_by_key(|mode| strictness(*mode))
            .unwrap_or_default();
        let label = owners
            .first()
            .map(|owner| owner.service.to_string())
            .unwrap_or_default();
        LocalPort {
            protocol: protocol.map(|p| p.protocol),
            mtls,
            service: Arc::from(label),
            owners,
        }
    }
}

/// Orders modes by what they demand of a caller: DISABLED takes plaintext only,
/// PERMISSIVE mTLS too (so it serves a DISABLED service's callers as well), STRICT
/// only mTLS.
fn strictness(mode: MtlsMode) -> u8 {
    match mode {
        MtlsMode::Disabled => 0,
        MtlsMode::Permissive => 1,
        MtlsMode::Strict => 2,
    }
}

#[cfg(test)]
pub(crate) mod tests;
