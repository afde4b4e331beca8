//! Kubernetes objects to the weft.v1 messages proxies are served: a Service to a weft
//! Service, the EndpointSlices of a Service (and the Pods behind them) to its Endpoints.
//! Pure functions: the mapping is tested without an API server, and the Kubernetes
//! store ([`super::store`]) only gathers their inputs.
//!
//! Output is canonical (sorted, deduplicated), because a resource's version moves
//! whenever its encoded bytes do: two replicas, or one replica before and after a
//! resync, must produce identical bytes from identical objects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service as KubeService, ServicePort as KubePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use weft_proto::model::DRAINING_LABEL;
use weft_proto::v1;

/// Overrides the protocol of some ports: `"<port name or number>=<protocol>, ..."`,
/// protocol one of `tcp`, `http1`, `http2`, `grpc`. Wins over `appProtocol`.
pub const PROTOCOLS_ANNOTATION: &str = "weft.io/protocols";

/// The container name of Weft's sidecar. A Pod that runs one is meshed: its endpoints
/// carry its identity, so callers use mTLS; any other Pod is reached in plaintext.
pub const PROXY_CONTAINER: &str = "weft-proxy";

/// The label the EndpointSlice controller puts on every slice it makes for a Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service that cannot be served, and why (for the log; it is skipped, the rest of
/// the mesh is served).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Service {namespace}/{name}: {reason}")]
pub struct Unservable {
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

/// The weft Service of a Kubernetes Service: its TCP ports with their protocols, its
/// cluster IPs as virtual IPs, and its DNS names as host names. `Ok(None)` for the
/// kinds Weft does not route (ExternalName, no TCP port).
pub fn service(
    service: &KubeService,
    cluster_domain: &str,
) -> Result<Option<v1::Service>, Unservable> {
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let name = service.metadata.name.clone().unwrap_or_default();
    let unservable = |reason: String| Unservable {
        namespace: namespace.clone(),
        name: name.clone(),
        reason,
    };
    let Some(spec) = &service.spec else {
        return Ok(None);
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(None);
    }
    let overrides = service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROTOCOLS_ANNOTATION))
        .map(|text| parse_overrides(text))
        .transpose()
        .map_err(|reason| unservable(format!("annotation {PROTOCOLS_ANNOTATION}: {reason}")))?
        .unwrap_or_default();
    let ports: Vec<v1::ServicePort> = spec
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .map(|p| v1::ServicePort {
            name: p.name.clone().unwrap_or_default(),
            port: u32::try_from(p.port).unwrap_or(0),
            protocol: protocol(p, &overrides).to_owned(),
        })
        .collect();
    if ports.is_empty() {
        return Ok(None);
    }
    let virtual_ips = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        .cloned()
        .collect::<std::collections::BTreeSet<String>>()
        .into_iter()
        .collect();
    Ok(Some(v1::Service {
        hostnames: hostnames(&name, &namespace, cluster_domain),
        namespace,
        name,
        ports,
        virtual_ips,
        ..Default::default()
    }))
}

/// The names a Pod may use for a Service in another namespace, the fully qualified
/// one first. The bare `<name>` is left out: it means a different Service in each
/// namespace, and a host name must name one Service mesh-wide.
pub fn hostnames(name: &str, namespace: &str, cluster_domain: &str) -> Vec<String> {
    vec![
        format!("{name}.{namespace}.svc.{cluster_domain}"),
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}"),
    ]
}

/// Port name or number -> protocol.
fn parse_overrides(text: &str) -> Result<BTreeMap<String, &'static str>, String> {
    let mut overrides = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (port, protocol) = entry
            .split_once('=')
            .ok_or_else(|| format!("{entry:?} is not <port>=<protocol>"))?;
        let protocol = match protocol.trim() {
            "tcp" => "tcp",
            "http1" | "http" => "http1",
            "http2" | "h2c" => "http2",
            "grpc" => "grpc",
            other => {
                return Err(format!(
                    "{other:?} is not a protocol (use tcp, http1, http2 or grpc)"
                ))
            }
        };
        overrides.insert(port.trim().to_owned(), protocol);
    }
    Ok(overrides)
}

/// A port's protocol: the annotation, else `appProtocol`, else the port name's prefix
/// (the convention Istio users already follow: `http-web`, `grpc-api`), else opaque TCP.
fn protocol(port: &KubePort, overrides: &BTreeMap<String, &'static str>) -> &'static str {
    let by_name = port.name.as_ref().and_then(|n| overrides.get(n));
    let by_number = overrides.get(&port.port.to_string());
    if let Some(protocol) = by_name.or(by_number) {
        return protocol;
    }
    if let Some(app) = &port.app_protocol {
        return match app.to_ascii_lowercase().as_str() {
            "kubernetes.io/h2c" | "h2c" | "http2" => "http2",
            "http" | "kubernetes.io/http" | "http1" => "http1",
            "grpc" | "kubernetes.io/grpc" => "grpc",
            // tcp, tls, https, kubernetes.io/ws, mysql...: bytes Weft must not parse.
            _ => "tcp",
        };
    }
    let name = port.name.as_deref().unwrap_or_default();
    let prefix = name.split('-').next().unwrap_or_default();
    match prefix {
        "http" => "http1",
        "http2" | "h2c" => "http2",
        "grpc" => "grpc",
        _ => "tcp",
    }
}

/// What an endpoint's Pod tells: the identity its sidecar holds, if it has one.
pub trait Pods {
    /// The SPIFFE ID of the meshed Pod `namespace/name`; `None` when it runs no
    /// Weft sidecar or is unknown.
    fn identity(&self, namespace: &str, name: &str) -> Option<String>;
}

/// The SPIFFE ID a Pod's sidecar is issued, or `None` for a Pod without one.
pub fn pod_identity(pod: &Pod, trust_domain: &str) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let meshed = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == PROXY_CONTAINER);
    if !meshed {
        return None;
    }
    let namespace = pod.metadata.namespace.as_deref()?;
    let account = spec.service_account_name.as_deref().unwrap_or("default");
    Some(format!(
        "spiffe://{trust_domain}/ns/{namespace}/sa/{account}"
    ))
}

/// Where an endpoint stands in its slice; the order is the order of preference when
/// an address appears in two slices at once (as it moves between them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Standing {
    /// Neither ready nor serving: starting, failing its probe, or shutting down.
    Listed,
    /// Terminating but still serving.
    Terminating,
    Ready,
}

/// The Endpoints of `service` from its slices. Ready endpoints are served; when none
/// is, the serving ones that are terminating are (as kube-proxy does), so a Service
/// whose every Pod is shutting down still answers. A terminating endpoint is thus
/// drained: no new requests reach it while another is ready, and the requests already
/// on it finish, since removing an endpoint closes nothing.
///
/// Every other endpoint of the slices is listed too, `unhealthy`: callers send it
/// nothing, but its own sidecar learns from it which services its pod serves
/// (`weft-proxy --workload-address`), so a pod that is not ready yet, or is shutting
/// down, keeps its services' mTLS mode and policies instead of falling open.
pub fn endpoints(
    service: &v1::Service,
    slices: &[&EndpointSlice],
    pods: &impl Pods,
) -> v1::Endpoints {
    let mut listed: BTreeMap<(String, u32, String), (Standing, v1::Endpoint)> = BTreeMap::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let ports: Vec<(String, u32)> = slice
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| {
                let port = u32::try_from(p.port?).ok()?;
                Some((p.name.clone().unwrap_or_default(), port))
            })
            .filter(|(name, _)| {
                service.ports.len() == 1 && name.is_empty()
                    || service.ports.iter().any(|p| &p.name == name)
            })
            .collect();
        for endpoint in slice.endpoints.iter().flatten() {
            // Consumers use the first address only (the API's own rule).
            let Some(address) = endpoint.addresses.first() else {
                continue;
            };
            let conditions = endpoint.conditions.as_ref();
            let is_ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let is_serving = conditions.and_then(|c| c.serving).unwrap_or(is_ready);
            let is_terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            let standing = if is_ready && !is_terminating {
                Standing::Ready
            } else if is_serving && is_terminating {
                Standing::Terminating
            } else {
                Standing::Listed
            };
            let identity = endpoint
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| {
                    let namespace = r.namespace.as_deref().unwrap_or(&service.namespace);
                    pods.identity(namespace, r.name.as_deref()?)
                })
                .unwrap_or_default();
            let zone = endpoint.zone.clone().unwrap_or_default();
            for (port_name, port) in &ports {
                let key = (address.clone(), *port, port_name.clone());
                if listed
                    .get(&key)
                    .is_some_and(|(known, _)| *known >= standing)
                {
                    continue;
                }
                let endpoint = v1::Endpoint {
                    address: address.clone(),
                    port: *port,
                    port_name: port_name.clone(),
                    locality: (!zone.is_empty()).then(|| v1::Locality {
                        region: String::new(),
                        zone: zone.clone(),
                    }),
                    identity: identity.clone(),
                    ..Default::default()
                };
                listed.insert(key, (standing, endpoint));
            }
        }
    }
    let any_ready = listed.values().any(|(s, _)| *s == Standing::Ready);
    let served = if any_ready {
        Standing::Ready
    } else {
        Standing::Terminating
    };
    v1::Endpoints {
        namespace: service.namespace.clone(),
        name: service.name.clone(),
        endpoints: listed
            .into_values()
            .map(|(standing, mut endpoint)| {
                if standing != served {
                    endpoint.health = "unhealthy".to_owned();
                }
                if standing == Standing::Terminating {
                    endpoint
                        .labels
                        .insert(DRAINING_LABEL.to_owned(), "true".to_owned());
                }
                endpoint
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
