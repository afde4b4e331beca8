//! `Service`: what an application can dial, on which ports and protocols.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use super::{validate_label, HealthCheck, Invalid, Resilience, ResourceName, Telemetry};
use crate::v1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: ResourceName,
    pub ports: Vec<ServicePort>,
    pub virtual_ips: Vec<IpAddr>,
    pub hostnames: Vec<String>,
    pub load_balancer: PolicyName,
    pub mtls: MtlsMode,
    /// Shared: every proxy destination of the service holds it.
    pub resilience: Arc<Resilience>,
    /// The active check each proxy of the service runs against its own application.
    pub health_check: Option<HealthCheck>,
    /// Access logs and tracing for the service's requests.
    pub telemetry: Telemetry,
}

/// How a service's workloads accept connections, and whether callers encrypt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum MtlsMode {
    /// Only mTLS with a mesh client certificate; plaintext connections are closed.
    Strict,
    /// mTLS or plaintext, told apart by the first bytes: the default, so that a mesh
    /// without identities keeps working and workloads can move to mTLS one by one.
    #[default]
    Permissive,
    /// Plaintext only; callers do not use TLS even to endpoints with an identity.
    Disabled,
}

impl MtlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Strict => "STRICT",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Disabled => "DISABLED",
        }
    }
}

impl TryFrom<&str> for MtlsMode {
    type Error = Invalid;

    fn try_from(text: &str) -> Result<Self, Invalid> {
        match text {
            "" | "PERMISSIVE" => Ok(MtlsMode::Permissive),
            "STRICT" => Ok(MtlsMode::Strict),
            "DISABLED" => Ok(MtlsMode::Disabled),
            other => Err(Invalid::new(
                "mtls",
                format!("unknown mode {other:?} (expected STRICT, PERMISSIVE or DISABLED)"),
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Empty only when the service has a single port.
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Http1,
    Http2,
    Grpc,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "tcp" => Ok(Protocol::Tcp),
            "http1" => Ok(Protocol::Http1),
            "http2" => Ok(Protocol::Http2),
            "grpc" => Ok(Protocol::Grpc),
            other => Err(format!(
                "unknown protocol {other:?} (expected tcp, http1, http2 or grpc)"
            )),
        }
    }
}

/// The name of a load-balancing policy, checked only for its syntax.
///
/// Which policies exist is a property of the proxy build, not of the control plane
/// (as with Envoy's typed extensions): a proxy converts the name into its own policy
/// and NACKs one it does not implement, keeping its last good service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyName(String);

impl PolicyName {
    pub const DEFAULT: &'static str = "p2c_ewma";

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for PolicyName {
    fn default() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

impl TryFrom<&str> for PolicyName {
    type Error = Invalid;

    fn try_from(text: &str) -> Result<Self, Invalid> {
        if text.is_empty() {
            return Ok(Self::default());
        }
        let valid = text.len() <= 63
            && text.as_bytes()[0].is_ascii_lowercase()
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(Invalid::new(
                "load_balancer",
                format!("{text:?} is not a policy name (lowercase letters, digits and '_')"),
            ));
        }
        Ok(Self(text.to_owned()))
    }
}

impl TryFrom<&v1::Service> for Service {
    type Error = Invalid;

    fn try_from(msg: &v1::Service) -> Result<Self, Invalid> {
        let name = ResourceName::new(&msg.namespace, &msg.name)?;
        if msg.ports.is_empty() {
            return Err(Invalid::new("ports", "a service needs at least one port"));
        }
        let mut ports = Vec::with_capacity(msg.ports.len());
        let mut numbers = HashSet::new();
        let mut names = HashSet::new();
        for (i, port) in msg.ports.iter().enumerate() {
            let field = format!("ports[{i}]");
            let port = ServicePort::try_from(port).map_err(|e| e.within(&field))?;
            if msg.ports.len() > 1 && port.name.is_empty() {
                return Err(Invalid::new(
                    format!("{field}.name"),
                    "must be set when a service has several ports",
                ));
            }
            if !numbers.insert(port.port) {
                return Err(Invalid::new(
                    format!("{field}.port"),
                    format!("duplicate port {}", port.port),
                ));
            }
            if !port.name.is_empty() && !names.insert(port.name.clone()) {
                return Err(Invalid::new(
                    format!("{field}.name"),
                    format!("duplicate port name {:?}", port.name),
                ));
            }
            ports.push(port);
        }
        let mut virtual_ips = Vec::with_capacity(msg.virtual_ips.len());
        for (i, text) in msg.virtual_ips.iter().enumerate() {
            let ip: IpAddr = text.parse().map_err(|_| {
                Invalid::new(
                    format!("virtual_ips[{i}]"),
                    format!("{text:?} is not an IP address"),
                )
            })?;
            if virtual_ips.contains(&ip) {
                return Err(Invalid::new(
                    format!("virtual_ips[{i}]"),
                    format!("duplicate address {ip}"),
                ));
            }
            virtual_ips.push(ip);
        }
        let mut hostnames = Vec::with_capacity(msg.hostnames.len());
        for (i, host) in msg.hostnames.iter().enumerate() {
            validate_hostname(host).map_err(|e| e.within(format!("hostnames[{i}]")))?;
            let host = host.to_ascii_lowercase();
            if hostnames.contains(&host) {
                return Err(Invalid::new(
                    format!("hostnames[{i}]"),
                    format!("duplicate host name {host:?}"),
                ));
            }
            hostnames.push(host);
        }
        Ok(Service {
            name,
            ports,
            virtual_ips,
            hostnames,
            load_balancer: PolicyName::try_from(msg.load_balancer.as_str())?,
            mtls: MtlsMode::try_from(msg.mtls.as_str())?,
            resilience: Arc::new(Resilience::from_proto(msg)?),
            health_check: msg
                .health_check
                .as_ref()
                .map(HealthCheck::try_from)
                .transpose()
                .map_err(|e| e.within("health_check"))?,
            telemetry: msg
                .telemetry
                .as_ref()
                .map(Telemetry::try_from)
                .transpose()
                .map_err(|e| e.within("telemetry"))?
                .unwrap_or_default(),
        })
    }
}

impl TryFrom<&v1::ServicePort> for ServicePort {
    type Error = Invalid;

    fn try_from(msg: &v1::ServicePort) -> Result<Self, Invalid> {
        if !msg.name.is_empty() {
            validate_label("name", &msg.name)?;
        }
        Ok(ServicePort {
            name: msg.name.clone(),
            port: port_number("port", msg.port)?,
            protocol: msg
                .protocol
                .parse()
                .map_err(|reason| Invalid::new("protocol", reason))?,
        })
    }
}

impl Service {
    pub fn to_proto(&self) -> v1::Service {
        let mut msg = v1::Service {
            namespace: self.name.namespace.clone(),
            name: self.name.name.clone(),
            ports: self
                .ports
                .iter()
                .map(|p| v1::ServicePort {
                    name: p.name.clone(),
                    port: u32::from(p.port),
                    protocol: p.protocol.as_str().to_owned(),
                })
                .collect(),
            virtual_ips: self.virtual_ips.iter().map(ToString::to_string).collect(),
            hostnames: self.hostnames.clone(),
            load_balancer: self.load_balancer.as_str().to_owned(),
            // The default stays implicit, as an operator who never set it wrote it.
            mtls: match self.mtls {
                MtlsMode::Permissive => String::new(),
                mode => mode.as_str().to_owned(),
            },
            health_check: self.health_check.as_ref().map(HealthCheck::to_proto),
            telemetry: self.telemetry.to_proto(),
            ..Default::default()
        };
        self.resilience.to_proto(&mut msg);
        msg
    }

    /// The port an endpoint's `port_name` refers to (the only port when it is empty).
    pub fn port_named(&self, port_name: &str) -> Option<&ServicePort> {
        if port_name.is_empty() && self.ports.len() == 1 {
            return self.ports.first();
        }
        self.ports.iter().find(|p| p.name == port_name)
    }
}

/// A port number in 1..=65535.
pub(crate) fn port_number(field: &str, value: u32) -> Result<u16, Invalid> {
    match u16::try_from(value) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(Invalid::new(
            field,
            format!("{value} is out of range 1-65535"),
        )),
    }
}

pub(crate) fn validate_hostname(host: &str) -> Result<(), Invalid> {
    if host.is_empty() || host.len() > 253 {
        return Err(Invalid::new("", format!("{host:?} is not a host name")));
    }
    for label in host.split('.') {
        let lower = label.to_ascii_lowercase();
        validate_label("", &lower)
            .map_err(|_| Invalid::new("", format!("{host:?} is not a host name")))?;
    }
    Ok(())
}
