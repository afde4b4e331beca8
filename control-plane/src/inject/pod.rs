//! The injection itself, on one pod (or pod template): pure, so the webhook and
//! `weftctl inject` run the very same function and a test can read what it does.
//!
//! An injected pod gets, ahead of its own init containers:
//! 1. `weft-init`: `weft-proxy init` writes the pod's iptables rules, with only
//!    NET_ADMIN and NET_RAW, and exits;
//! 2. `weft-proxy`: the proxy as a native sidecar (`restartPolicy: Always`) whose
//!    startup probe is `/ready`, so the kubelet starts the next container only once
//!    the proxy holds its config and certificate, and stops it after the app's
//!    containers (a Job's pod completes when its main container exits);
//!
//! and the volumes these need: the projected ServiceAccount token for the audience
//! `weft` (the proxy's proof of identity) and an emptyDir for its state. Everything
//! pod-specific reaches the proxy through `fieldRef`s, so the injected spec does not
//! depend on the pod's name or address and a template is injected as its pods are.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PodSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecurityContext, ServiceAccountTokenProjection, Volume,
    VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::settings::{check_quantity, Settings};

/// The label, on a namespace or a pod, that asks for injection (`enabled`) or
/// refuses it (`disabled`; on a pod it wins over its namespace).
pub const INJECT_LABEL: &str = "weft.io/inject";
/// The annotation recording which Weft version injected the pod.
pub const VERSION_ANNOTATION: &str = "weft.io/proxy-version";
/// Inbound ports the iptables rules leave alone (`8081,9090`).
pub const EXCLUDE_INBOUND_PORTS: &str = "weft.io/exclude-inbound-ports";
/// Outbound ports the iptables rules leave alone (`5432`).
pub const EXCLUDE_OUTBOUND_PORTS: &str = "weft.io/exclude-outbound-ports";
/// Outbound destinations the iptables rules leave alone (`10.0.0.0/8,192.0.2.7/32`).
pub const EXCLUDE_OUTBOUND_CIDRS: &str = "weft.io/exclude-outbound-cidrs";
/// The proxy's resources, overriding the injector's defaults (`""` unsets one).
pub const PROXY_CPU_REQUEST: &str = "weft.io/proxy-cpu-request";
pub const PROXY_MEMORY_REQUEST: &str = "weft.io/proxy-memory-request";
pub const PROXY_CPU_LIMIT: &str = "weft.io/proxy-cpu-limit";
pub const PROXY_MEMORY_LIMIT: &str = "weft.io/proxy-memory-limit";
/// The proxy's log filter, overriding the injector's.
pub const PROXY_LOG: &str = "weft.io/proxy-log-level";

/// The sidecar's container name; the control plane treats a pod running a container
/// of this name as meshed (its endpoints carry its identity).
pub const PROXY_CONTAINER: &str = crate::kubernetes::translate::PROXY_CONTAINER;
pub const INIT_CONTAINER: &str = "weft-init";
pub const TOKEN_VOLUME: &str = "weft-token";
pub const STATE_VOLUME: &str = "weft-state";
const TOKEN_DIR: &str = "/var/run/weft/token";
const STATE_DIR: &str = "/var/lib/weft";
/// The proxy's fixed ports, as `weft-proxy init` assumes them.
const ADMIN_PORT: i32 = 15020;
/// Kubernetes' minimum; the kubelet renews the token at 80% of its life and the
/// proxy re-reads it at each certificate renewal.
const TOKEN_SECONDS: i64 = 3600;
/// The startup probe gives the proxy this long (period 1 s) to get its config and
/// certificate before the kubelet restarts it.
const STARTUP_SECONDS: i32 = 600;

/// Where the pod is and who injects it.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The control plane's own namespace: never injected.
    pub control_plane_namespace: &'a str,
}

/// What injection did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    /// Already injected; the proxy's containers were moved back to the head of the
    /// init containers (another webhook put its own in front).
    Reordered,
    Skipped(Skip),
}

/// Why a pod was left as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// kube-system or the control plane's namespace.
    SystemNamespace,
    /// Labelled `weft.io/inject: disabled`.
    OptedOut,
    /// A pod on the node's network: iptables rules would capture the node's traffic.
    HostNetwork,
    AlreadyInjected,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Skip::SystemNamespace => "the namespace is never injected",
            Skip::OptedOut => "the pod is labelled weft.io/inject: disabled",
            Skip::HostNetwork => "the pod uses the host's network",
            Skip::AlreadyInjected => "the pod already has a weft-proxy container",
        })
    }
}

/// A pod that cannot be injected as it is; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("weft injection: {0}")]
pub struct InjectError(pub String);

/// Injects the pod described by `meta` and `spec` in place.
pub fn inject(
    meta: &mut ObjectMeta,
    spec: &mut PodSpec,
    target: &Target<'_>,
    settings: &Settings,
) -> Result<Outcome, InjectError> {
    if target.namespace == "kube-system" || target.namespace == target.control_plane_namespace {
        return Ok(Outcome::Skipped(Skip::SystemNamespace));
    }
    let label = meta.labels.as_ref().and_then(|l| l.get(INJECT_LABEL));
    if label.map(String::as_str) == Some("disabled") {
        return Ok(Outcome::Skipped(Skip::OptedOut));
    }
    if spec.host_network == Some(true) {
        return Ok(Outcome::Skipped(Skip::HostNetwork));
    }
    let has = |containers: &[Container]| containers.iter().any(|c| c.name == PROXY_CONTAINER);
    if has(&spec.containers) {
        return Ok(Outcome::Skipped(Skip::AlreadyInjected));
    }
    if let Some(inits) = spec.init_containers.as_mut().filter(|inits| has(inits)) {
        return Ok(if move_to_front(inits) {
            Outcome::Reordered
        } else {
            Outcome::Skipped(Skip::AlreadyInjected)
        });
    }

    let annotations = meta.annotations.clone().unwrap_or_default();
    let pod = PodOptions::read(&annotations, settings)?;
    for volume in spec.volumes.iter().flatten() {
        if volume.name == TOKEN_VOLUME || volume.name == STATE_VOLUME {
            return Err(InjectError(format!(
                "spec.volumes: the pod already has a volume named {}",
                volume.name
            )));
        }
    }
    spec.init_containers.get_or_insert_with(Vec::new).splice(
        0..0,
        [
            init_container(&pod, settings),
            proxy_container(&pod, settings),
        ],
    );
    spec.volumes
        .get_or_insert_with(Vec::new)
        .extend([token_volume(), state_volume()]);
    meta.annotations.get_or_insert_with(BTreeMap::new).insert(
        VERSION_ANNOTATION.to_owned(),
        env!("CARGO_PKG_VERSION").to_owned(),
    );
    Ok(Outcome::Injected)
}

/// Puts `weft-init` and `weft-proxy` first, in that order; whether anything moved.
fn move_to_front(inits: &mut Vec<Container>) -> bool {
    let ours = |c: &Container| c.name == INIT_CONTAINER || c.name == PROXY_CONTAINER;
    let count = inits.iter().filter(|c| ours(c)).count();
    let in_place =
        inits
            .iter()
            .take(count)
            .map(|c| c.name.as_str())
            .eq([INIT_CONTAINER, PROXY_CONTAINER].into_iter().take(count));
    if in_place {
        return false;
    }
    let (mut front, rest): (Vec<Container>, Vec<Container>) = inits.drain(..).partition(ours);
    front.sort_by_key(|c| c.name != INIT_CONTAINER);
    inits.extend(front);
    inits.extend(rest);
    true
}

/// What a pod's annotations change, checked.
struct PodOptions {
    exclude_inbound_ports: String,
    exclude_outbound_ports: String,
    exclude_outbound_cidrs: String,
    resources: Vec<(&'static str, String)>,
    log_level: String,
}

impl PodOptions {
    fn read(
        annotations: &BTreeMap<String, String>,
        settings: &Settings,
    ) -> Result<PodOptions, InjectError> {
        let get = |key: &str| annotations.get(key).map(|v| v.trim().to_owned());
        let ports = |key: &str| -> Result<String, InjectError> {
            let value = get(key).unwrap_or_default();
            for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                if !part.parse::<u16>().is_ok_and(|p| p != 0) {
                    return Err(InjectError(format!(
                        "metadata.annotations[{key}]: {part:?} is not a port (1-65535)"
                    )));
                }
            }
            Ok(normalize_list(&value))
        };
        let cidrs = get(EXCLUDE_OUTBOUND_CIDRS).unwrap_or_default();
        for part in cidrs.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if !is_cidr(part) {
                return Err(InjectError(format!(
                    "metadata.annotations[{EXCLUDE_OUTBOUND_CIDRS}]: {part:?} is not an address or CIDR"
                )));
            }
        }
        let defaults = &settings.resources;
        let mut resources = Vec::new();
        for (field, key, default) in [
            ("requests.cpu", PROXY_CPU_REQUEST, &defaults.cpu_request),
            (
                "requests.memory",
                PROXY_MEMORY_REQUEST,
                &defaults.memory_request,
            ),
            ("limits.cpu", PROXY_CPU_LIMIT, &defaults.cpu_limit),
            ("limits.memory", PROXY_MEMORY_LIMIT, &defaults.memory_limit),
        ] {
            let value = match get(key) {
                Some(value) if value.is_empty() => value,
                Some(value) => {
                    check_quantity(&value)
                        .map_err(|e| InjectError(format!("metadata.annotations[{key}]: {e}")))?;
                    value
                }
                None => default.clone(),
            };
            resources.push((field, value));
        }
        Ok(PodOptions {
            exclude_inbound_ports: ports(EXCLUDE_INBOUND_PORTS)?,
            exclude_outbound_ports: ports(EXCLUDE_OUTBOUND_PORTS)?,
            exclude_outbound_cidrs: normalize_list(&cidrs),
            resources,
            log_level: get(PROXY_LOG)
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| settings.log_level.clone()),
        })
    }
}

/// `" 1, 2 ,,3"` → `"1,2,3"`.
fn normalize_list(value: &str) -> String {
    value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

fn is_cidr(text: &str) -> bool {
    let (address, prefix) = text.split_once('/').unwrap_or((text, ""));
    let Ok(address) = address.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if address.is_ipv4() { 32 } else { 128 };
    prefix.is_empty() || prefix.parse::<u8>().is_ok_and(|p| p <= max)
}

fn init_container(pod: &PodOptions, settings: &Settings) -> Container {
    let uid = settings.proxy_uid.to_string();
    let mut args = vec![
        "init".to_owned(),
        "--proxy-uid".to_owned(),
        uid.clone(),
        "--proxy-gid".to_owned(),
        uid,
    ];
    for (flag, value) in [
        ("--exclude-inbound-ports", &pod.exclude_inbound_ports),
        ("--exclude-outbound-ports", &pod.exclude_outbound_ports),
        ("--exclude-outbound-cidrs", &pod.exclude_outbound_cidrs),
    ] {
        if !value.is_empty() {
            args.extend([flag.to_owned(), value.clone()]);
        }
    }
    Container {
        name: INIT_CONTAINER.to_owned(),
        image: Some(settings.proxy_image.clone()),
        args: Some(args),
        // Root for iptables, with only the two capabilities it needs.
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".to_owned(), "NET_RAW".to_owned()]),
                drop: Some(vec!["ALL".to_owned()]),
            }),
            ..SecurityContext::default()
        }),
        resources: Some(resources(&[
            ("requests.cpu", "10m".to_owned()),
            ("requests.memory", "16Mi".to_owned()),
            ("limits.memory", "64Mi".to_owned()),
        ])),
        ..Container::default()
    }
}

fn proxy_container(pod: &PodOptions, settings: &Settings) -> Container {
    let field = |name: &str, path: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let value = |name: &str, value: &str| EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    };
    let http_probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(ADMIN_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let uid = i64::from(settings.proxy_uid);
    Container {
        name: PROXY_CONTAINER.to_owned(),
        image: Some(settings.proxy_image.clone()),
        // A native sidecar: started before the app, stopped after it.
        restart_policy: Some("Always".to_owned()),
        env: Some(vec![
            value("WEFT_CONTROL_PLANE", &settings.control_plane),
            field("WEFT_NODE_ID", "metadata.name"),
            field("WEFT_NAMESPACE", "metadata.namespace"),
            field("WEFT_SERVICE_ACCOUNT", "spec.serviceAccountName"),
            // Which Services this pod serves comes from their EndpointSlices: the
            // proxy finds its own address among their endpoints.
            field("WEFT_WORKLOAD_ADDRESS", "status.podIP"),
            value("WEFT_ADMIN_ADDR", &format!("0.0.0.0:{ADMIN_PORT}")),
            value(
                "WEFT_ADMIN_ADVERTISE",
                &format!("$(WEFT_WORKLOAD_ADDRESS):{ADMIN_PORT}"),
            ),
            value("WEFT_IDENTITY_TOKEN_FILE", &format!("{TOKEN_DIR}/token")),
            value("WEFT_STATE_DIR", STATE_DIR),
            // The kubelet stops a native sidecar only after the app's containers have
            // exited: there is nothing left to drain for.
            value("WEFT_DRAIN_DELAY_MS", "0"),
            value("WEFT_LOG", &pod.log_level),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("weft-admin".to_owned()),
            container_port: ADMIN_PORT,
            ..ContainerPort::default()
        }]),
        startup_probe: Some(http_probe("/ready", 1, STARTUP_SECONDS)),
        readiness_probe: Some(http_probe("/ready", 5, 3)),
        liveness_probe: Some(http_probe("/live", 10, 3)),
        resources: Some(resources(&pod.resources)),
        security_context: Some(SecurityContext {
            run_as_user: Some(uid),
            run_as_group: Some(uid),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: TOKEN_VOLUME.to_owned(),
                mount_path: TOKEN_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: STATE_VOLUME.to_owned(),
                mount_path: STATE_DIR.to_owned(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    }
}

/// `requests.cpu`-style keys to ResourceRequirements; empty values are left out.
fn resources(values: &[(&str, String)]) -> ResourceRequirements {
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    for (key, value) in values.iter().filter(|(_, v)| !v.is_empty()) {
        let (kind, resource) = key.split_once('.').unwrap_or(("requests", key));
        let map = if kind == "limits" {
            &mut limits
        } else {
            &mut requests
        };
        map.insert(resource.to_owned(), Quantity(value.clone()));
    }
    ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..ResourceRequirements::default()
    }
}

fn token_volume() -> Volume {
    Volume {
        name: TOKEN_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some("weft".to_owned()),
                    expiration_seconds: Some(TOKEN_SECONDS),
                    path: "token".to_owned(),
                    ..ServiceAccountTokenProjection::default()
                }),
                ..VolumeProjection::default()
            }]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn state_volume() -> Volume {
    Volume {
        name: STATE_VOLUME.to_owned(),
        // The last good config, for a proxy restarted while the control plane is
        // away; a few hundred KiB even for a large mesh.
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("64Mi".to_owned())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

#[cfg(test)]
mod tests;
