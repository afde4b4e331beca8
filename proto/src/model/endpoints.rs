//! `Endpoints`: where a service's traffic may go, with weight, locality and health.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use super::service::port_number;
use super::{validate_label, Invalid, ResourceName, SpiffeId};
use crate::v1;

/// The largest accepted endpoint weight; keeps weighted sums far from overflow.
pub const MAX_WEIGHT: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The same name as the service these endpoints belong to.
    pub name: ResourceName,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: SocketAddr,
    /// The service port served; empty when the service has one port.
    pub port_name: String,
    pub weight: u32,
    pub locality: Locality,
    pub labels: BTreeMap<String, String>,
    pub health: Health,
    /// The SPIFFE ID the peer's certificate must carry; `None` means plaintext.
    pub identity: Option<SpiffeId>,
}

/// The label the control plane puts on an endpoint whose workload is shutting down
/// but still serves (a terminating Kubernetes Pod): it takes no new requests while
/// another endpoint is ready, and shows as `draining`. A label, not a third health,
/// so that proxies of every version read the health they know.
pub const DRAINING_LABEL: &str = "weft.io/draining";

impl Endpoint {
    pub fn draining(&self) -> bool {
        self.labels.get(DRAINING_LABEL).is_some_and(|v| v == "true")
    }

    /// What an operator sees of the endpoint as listed: `healthy`, `unhealthy` or
    /// `draining` (a proxy may know more: ejected, unreachable).
    pub fn state(&self) -> &'static str {
        match self.draining() {
            true => "draining",
            false => self.health.as_str(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Locality {
    pub region: String,
    pub zone: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Health {
    #[default]
    Healthy,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

impl TryFrom<&v1::Endpoints> for Endpoints {
    type Error = Invalid;

    fn try_from(msg: &v1::Endpoints) -> Result<Self, Invalid> {
        let name = ResourceName::new(&msg.namespace, &msg.name)?;
        let mut seen = HashSet::new();
        let mut endpoints = Vec::with_capacity(msg.endpoints.len());
        for (i, endpoint) in msg.endpoints.iter().enumerate() {
            let field = format!("endpoints[{i}]");
            let endpoint = Endpoint::try_from(endpoint).map_err(|e| e.within(&field))?;
            if !seen.insert((endpoint.address, endpoint.port_name.clone())) {
                return Err(Invalid::new(
                    field,
                    format!("duplicate endpoint {}", endpoint.address),
                ));
            }
            endpoints.push(endpoint);
        }
        Ok(Endpoints { name, endpoints })
    }
}

impl TryFrom<&v1::Endpoint> for Endpoint {
    type Error = Invalid;

    fn try_from(msg: &v1::Endpoint) -> Result<Self, Invalid> {
        let ip: IpAddr = msg.address.parse().map_err(|_| {
            Invalid::new("address", format!("{:?} is not an IP address", msg.address))
        })?;
        let port = port_number("port", msg.port)?;
        if !msg.port_name.is_empty() {
            validate_label("port_name", &msg.port_name)?;
        }
        let weight = match msg.weight {
            0 => 1,
            w if w <= MAX_WEIGHT => w,
            w => {
                return Err(Invalid::new(
                    "weight",
                    format!("{w} is above the maximum {MAX_WEIGHT}"),
                ))
            }
        };
        let health = match msg.health.as_str() {
            "" | "healthy" => Health::Healthy,
            "unhealthy" => Health::Unhealthy,
            other => {
                return Err(Invalid::new(
                    "health",
                    format!("unknown health {other:?} (expected healthy or unhealthy)"),
                ))
            }
        };
        let identity = match msg.identity.as_str() {
            "" => None,
            text => Some(SpiffeId::parse(text).map_err(|e| Invalid::new("identity", e.reason))?),
        };
        let locality = msg
            .locality
            .as_ref()
            .map(|l| Locality {
                region: l.region.clone(),
                zone: l.zone.clone(),
            })
            .unwrap_or_default();
        Ok(Endpoint {
            address: SocketAddr::new(ip, port),
            port_name: msg.port_name.clone(),
            weight,
            locality,
            labels: msg
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            health,
            identity,
        })
    }
}

impl Endpoints {
    pub fn to_proto(&self) -> v1::Endpoints {
        v1::Endpoints {
            namespace: self.name.namespace.clone(),
            name: self.name.name.clone(),
            endpoints: self.endpoints.iter().map(Endpoint::to_proto).collect(),
        }
    }
}

impl Endpoint {
    pub fn to_proto(&self) -> v1::Endpoint {
        v1::Endpoint {
            address: self.address.ip().to_string(),
            port: u32::from(self.address.port()),
            port_name: self.port_name.clone(),
            weight: self.weight,
            locality: Some(v1::Locality {
                region: self.locality.region.clone(),
                zone: self.locality.zone.clone(),
            }),
            labels: self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            health: self.health.as_str().to_owned(),
            identity: self
                .identity
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        }
    }
}
