//! Which service, and which of its ports, a destination names: a virtual IP and
//! port (a captured connection) or a host name (an HTTP Host or `:authority`).
//!
//! The proxy's snapshot resolves its outbound traffic with this, and `weftctl
//! explain` resolves the URL it is given with the same code, so that the two cannot
//! disagree about where a request goes.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::{Protocol, ResourceName, Service};

/// A service and one of its ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub service: ResourceName,
    pub port: u16,
}

/// The indexes from addresses and host names to services.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Virtual IP and port of every service port, for transparent capture.
    pub by_virtual_address: HashMap<SocketAddr, Target>,
    /// Lower-case host name (without port) to service, for HTTP authority routing.
    pub by_hostname: HashMap<String, ResourceName>,
}

impl Directory {
    pub fn new<'a>(services: impl IntoIterator<Item = &'a Service>) -> Directory {
        let mut services: Vec<&Service> = services.into_iter().collect();
        // Sorted, so that a conflict between two services resolves the same way on
        // every proxy (the first name wins).
        services.sort_by(|a, b| a.name.cmp(&b.name));
        let mut directory = Directory::default();
        for service in services {
            for ip in &service.virtual_ips {
                for port in &service.ports {
                    directory
                        .by_virtual_address
                        .entry(SocketAddr::new(*ip, port.port))
                        .or_insert_with(|| Target {
                            service: service.name.clone(),
                            port: port.port,
                        });
                }
            }
            for host in &service.hostnames {
                directory
                    .by_hostname
                    .entry(host.clone())
                    .or_insert_with(|| service.name.clone());
            }
        }
        directory
    }

    /// The service a host name (an HTTP Host or :authority, possibly with a port) names.
    pub fn service_for_host(&self, authority: &str) -> Option<&ResourceName> {
        self.by_hostname.get(&host_key(authority))
    }
}

/// A Host or `:authority` as the directory keys it: lower case, without its port
/// or a trailing dot.
pub fn host_key(authority: &str) -> String {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl Service {
    /// The port an HTTP request to this service goes to: the authority's port, else
    /// `default_port` (the port the client dialled), and when neither is one of the
    /// service's ports, its first HTTP port.
    pub fn port_for_authority(&self, authority: &str, default_port: Option<u16>) -> Option<u16> {
        let explicit = authority
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok());
        [explicit, default_port]
            .into_iter()
            .flatten()
            .find(|p| self.ports.iter().any(|sp| sp.port == *p))
            .or_else(|| {
                self.ports
                    .iter()
                    .find(|p| p.protocol != Protocol::Tcp)
                    .map(|p| p.port)
            })
    }
}
