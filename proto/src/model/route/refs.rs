//! References from a route to Weft services: its parents (what it attaches to) and
//! its backends (where it sends requests).
//!
//! The Gateway API names Kubernetes objects by group, kind, namespace and name;
//! Weft's services play the part of Kubernetes Services, so the group is the core
//! one (`""`, or `core` as the GAMMA docs write it) and the kind `Service`. Both may
//! be left out: Weft has no Gateways, so unlike the Gateway API the default parent
//! kind is Service. They are not kept: a stored route names services only.

use crate::model::{validate_label, Invalid, ResourceName};
use crate::v1;

/// A service a route attaches to, and optionally one of its ports (GAMMA: without a
/// port, the route applies to every port of the service).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParentRef {
    pub service: ResourceName,
    pub port: Option<u16>,
}

/// A backend of a rule: a service, the port to use, and its share of the traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendRef {
    pub service: ResourceName,
    /// `None`: the backend's port with the number the request was sent to, or its
    /// only port.
    pub port: Option<u16>,
    /// Relative to the rule's other backends; 0 sends it nothing (a drained backend).
    pub weight: u32,
}

/// The Gateway API's largest weight.
pub const MAX_WEIGHT: u32 = 1_000_000;

impl ParentRef {
    pub fn from_proto(msg: &v1::ServiceRef, namespace: &str) -> Result<ParentRef, Invalid> {
        let (service, port) = service_ref(msg, namespace)?;
        Ok(ParentRef { service, port })
    }

    pub fn to_proto(&self) -> v1::ServiceRef {
        to_service_ref(&self.service, self.port)
    }
}

impl BackendRef {
    pub fn from_proto(msg: &v1::BackendRef, namespace: &str) -> Result<BackendRef, Invalid> {
        let fields = v1::ServiceRef {
            group: msg.group.clone(),
            kind: msg.kind.clone(),
            namespace: msg.namespace.clone(),
            name: msg.name.clone(),
            port: msg.port,
        };
        let (service, port) = service_ref(&fields, namespace)?;
        let weight = msg.weight.unwrap_or(1);
        if weight > MAX_WEIGHT {
            return Err(Invalid::new(
                "weight",
                format!("{weight} is larger than {MAX_WEIGHT}"),
            ));
        }
        Ok(BackendRef {
            service,
            port,
            weight,
        })
    }

    pub fn to_proto(&self) -> v1::BackendRef {
        v1::BackendRef {
            group: String::new(),
            kind: String::new(),
            namespace: self.service.namespace.clone(),
            name: self.service.name.clone(),
            port: self.port.map(u32::from).unwrap_or(0),
            weight: Some(self.weight),
        }
    }
}

/// The message naming a service and, optionally, a port.
pub fn to_service_ref(service: &ResourceName, port: Option<u16>) -> v1::ServiceRef {
    v1::ServiceRef {
        group: String::new(),
        kind: String::new(),
        namespace: service.namespace.clone(),
        name: service.name.clone(),
        port: port.map(u32::from).unwrap_or(0),
    }
}

/// A service and optional port named by group, kind, namespace (empty: the route's),
/// name and port (0: none).
pub fn service_ref(
    msg: &v1::ServiceRef,
    route_namespace: &str,
) -> Result<(ResourceName, Option<u16>), Invalid> {
    let (group, kind, namespace, name, port) = (
        msg.group.as_str(),
        msg.kind.as_str(),
        msg.namespace.as_str(),
        msg.name.as_str(),
        msg.port,
    );
    if !matches!(group, "" | "core") {
        return Err(Invalid::new(
            "group",
            format!(
                "{group:?} is not supported: Weft routes refer to services (group \"\" or core)"
            ),
        ));
    }
    if !matches!(kind, "" | "Service") {
        return Err(Invalid::new(
            "kind",
            format!("{kind:?} is not supported: Weft routes refer to services (kind Service)"),
        ));
    }
    let namespace = if namespace.is_empty() {
        route_namespace
    } else {
        validate_label("namespace", namespace)?;
        namespace
    };
    validate_label("name", name)?;
    let port = match port {
        0 => None,
        port => Some(
            u16::try_from(port)
                .map_err(|_| Invalid::new("port", format!("{port} is not a port (1-65535)")))?,
        ),
    };
    Ok((
        ResourceName {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        },
        port,
    ))
}
