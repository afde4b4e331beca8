//! Builds snapshots the way the discovery client does: from proto messages,
//! validated with `TryFrom`, so tests cannot construct what the mesh would reject.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use weft_proto::model::{Endpoints, ResourceName, Service};
use weft_proto::v1;
use weft_proxy::snapshot::{EndpointsView, Policy, ServiceView, Snapshot};

/// One service with its endpoints.
#[derive(Clone)]
pub struct Svc {
    pub message: v1::Service,
    pub endpoints: Vec<v1::Endpoint>,
}

/// A single-port service `shop/<name>` with `protocol` on port 80.
pub fn service(name: &str, protocol: &str) -> Svc {
    Svc {
        message: v1::Service {
            namespace: "shop".into(),
            name: name.into(),
            ports: vec![v1::ServicePort {
                name: String::new(),
                port: 80,
                protocol: protocol.into(),
            }],
            virtual_ips: Vec::new(),
            hostnames: vec![format!("{name}.shop")],
            load_balancer: String::new(),
            mtls: String::new(),
            health_check: None,
        },
        endpoints: Vec::new(),
    }
}

impl Svc {
    pub fn policy(mut self, policy: &str) -> Svc {
        self.message.load_balancer = policy.into();
        self
    }

    pub fn virtual_ip(mut self, ip: &str) -> Svc {
        self.message.virtual_ips.push(ip.into());
        self
    }

    pub fn endpoint(self, addr: SocketAddr) -> Svc {
        self.weighted(addr, 1)
    }

    pub fn weighted(mut self, addr: SocketAddr, weight: u32) -> Svc {
        self.endpoints.push(v1::Endpoint {
            address: addr.ip().to_string(),
            port: u32::from(addr.port()),
            weight,
            ..Default::default()
        });
        self
    }

    pub fn unhealthy(mut self, addr: SocketAddr) -> Svc {
        self.endpoints.push(v1::Endpoint {
            address: addr.ip().to_string(),
            port: u32::from(addr.port()),
            health: "unhealthy".into(),
            ..Default::default()
        });
        self
    }
}

pub fn snapshot(services: &[Svc]) -> Snapshot {
    let mut views = HashMap::new();
    let mut endpoints = HashMap::new();
    for svc in services {
        let service = Service::try_from(&svc.message).expect("valid service");
        let policy = Policy::from_name(service.load_balancer.as_str()).expect("a supported policy");
        let name: ResourceName = service.name.clone();
        let listed = Endpoints::try_from(&v1::Endpoints {
            namespace: name.namespace.clone(),
            name: name.name.clone(),
            endpoints: svc.endpoints.clone(),
        })
        .expect("valid endpoints");
        endpoints.insert(
            name.clone(),
            Arc::new(EndpointsView {
                endpoints: listed,
                version: 1,
            }),
        );
        views.insert(
            name,
            Arc::new(ServiceView {
                service,
                policy,
                version: 1,
            }),
        );
    }
    Snapshot::new(views, endpoints)
}
