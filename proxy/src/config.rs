//! The proxy's configuration: flags with `WEFT_*` environment equivalents, parsed once.
//!
//! Clap reads the raw values; [`Config::from_args`] then checks all of them and reports
//! every invalid one at once (the binary exits 64, EX_USAGE), instead of stopping at the
//! first. Nothing else in the proxy reads the environment.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;
use weft_proto::model::{validate_label, ResourceName};

#[derive(Debug, Clone, Parser)]
#[command(name = "weft-proxy", version, about = "The Weft sidecar proxy")]
pub struct Args {
    /// Control-plane address: host:port or http://host:port; the host may be a DNS name.
    /// Several, comma-separated, name the replicas when no one name resolves to all.
    #[arg(long, env = "WEFT_CONTROL_PLANE", default_value = "127.0.0.1:15010")]
    pub control_plane: String,
    /// Unique id of this proxy instance (default: <hostname>-<pid>).
    #[arg(long, env = "WEFT_NODE_ID")]
    pub node_id: Option<String>,
    /// Namespace of the workload this proxy fronts.
    #[arg(long, env = "WEFT_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Service the workload belongs to; with --workload-address and --workload-port
    /// the proxy registers it as an endpoint of that service.
    #[arg(long, env = "WEFT_SERVICE")]
    pub service: Option<String>,
    /// Address other proxies reach this workload at (a pod's IP). Without --service,
    /// the proxy learns its local services from the endpoints at this address.
    #[arg(long, env = "WEFT_WORKLOAD_ADDRESS")]
    pub workload_address: Option<String>,
    /// Port(s) of the workload for other proxies, `PORT` or `NAME=PORT` (repeatable).
    #[arg(
        long = "workload-port",
        env = "WEFT_WORKLOAD_PORTS",
        value_delimiter = ','
    )]
    pub workload_ports: Vec<String>,
    #[arg(long, env = "WEFT_REGION", default_value = "")]
    pub region: String,
    #[arg(long, env = "WEFT_ZONE", default_value = "")]
    pub zone: String,
    /// Workload label `KEY=VALUE` (repeatable).
    #[arg(long = "label", env = "WEFT_LABELS", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Relative weight of this workload's endpoint.
    #[arg(long, env = "WEFT_WEIGHT", default_value = "1")]
    pub weight: String,
    /// Admin HTTP listener: /live, /ready, /metrics, /config_dump, /tap, /shutdown.
    #[arg(long, env = "WEFT_ADMIN_ADDR", default_value = "127.0.0.1:15020")]
    pub admin: String,
    /// Where operators' tools (`weftctl top`) reach the admin listener, host:port,
    /// announced to the control plane (default: --admin, with an unspecified IP
    /// replaced by --workload-address; empty when neither gives an address).
    #[arg(long, env = "WEFT_ADMIN_ADVERTISE")]
    pub admin_advertise: Option<String>,
    /// Outbound listener that iptables redirects the application's traffic to.
    #[arg(long, env = "WEFT_OUTBOUND_ADDR", default_value = "127.0.0.1:15001")]
    pub outbound: String,
    /// Inbound listener for traffic from other proxies.
    #[arg(long, env = "WEFT_INBOUND_ADDR", default_value = "0.0.0.0:15006")]
    pub inbound: String,
    /// Where inbound traffic is delivered when it was not captured by iptables
    /// (with capture, it goes to 127.0.0.1:<original port>).
    #[arg(long, env = "WEFT_INBOUND_FORWARD")]
    pub inbound_forward: Option<String>,
    /// Explicit outbound listener `SERVICE[:PORT]=LISTEN_ADDR` (repeatable), for hosts
    /// without iptables; SERVICE is `name` or `namespace/name`.
    #[arg(long = "upstream", env = "WEFT_UPSTREAMS", value_delimiter = ',')]
    pub upstreams: Vec<String>,
    /// Largest delay between reconnect attempts to the control plane, in milliseconds.
    #[arg(long, env = "WEFT_RECONNECT_MAX_MS", default_value = "5000")]
    pub reconnect_max_ms: String,
    /// Directory for the last good config (static stability): written after every
    /// applied push, served from at start when the control plane is unreachable.
    #[arg(long, env = "WEFT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// On SIGTERM or POST /shutdown, how long to keep serving after telling the
    /// control plane the workload is leaving, so peers stop sending first (ms;
    /// only for a proxy that registers a workload).
    #[arg(long, env = "WEFT_DRAIN_DELAY_MS", default_value = "5000")]
    pub drain_delay_ms: String,
    /// After that, how long requests in flight may take before the proxy closes what
    /// is left and exits (ms).
    #[arg(long, env = "WEFT_SHUTDOWN_GRACE_PERIOD_MS", default_value = "120000")]
    pub shutdown_grace_period_ms: String,
    /// How long an upstream may send nothing, while its response head or the next
    /// piece of its body is awaited, before the request fails (504 before the
    /// head; after it, the response is cut) (ms; 0: no limit). Long polls and
    /// slow streams must send something this often (Envoy's stream idle timeout).
    #[arg(long, env = "WEFT_RESPONSE_IDLE_TIMEOUT_MS", default_value = "300000")]
    pub response_idle_timeout_ms: String,
    /// Read the mesh once from this file (the YAML documents `weftctl apply` takes)
    /// instead of connecting to a control plane.
    #[arg(long, env = "WEFT_STATIC_CONFIG")]
    pub static_config: Option<PathBuf>,
    /// A request whose client sends no body bytes for this long (ms) is abandoned:
    /// 408 (if no response has begun), upstream request cancelled, connection
    /// closed. On HTTP/2 only when the response did not move either.
    #[arg(long, env = "WEFT_REQUEST_BODY_TIMEOUT_MS", default_value = "60000")]
    pub request_body_timeout_ms: String,
    /// Downstream connections open at once over every data-path listener; the
    /// next one is closed as soon as it is accepted (default: half the
    /// open-files limit, at most 100000).
    #[arg(long, env = "WEFT_MAX_CONNECTIONS")]
    pub max_connections: Option<String>,
    /// Data-path worker threads (0: one per CPU).
    #[arg(long, env = "WEFT_WORKERS", default_value = "0")]
    pub workers: String,
    /// Add response headers naming the route rule (`weft-route`, `weft-route-rule`)
    /// and the backend service (`weft-backend`) that served each request.
    /// The variable takes true/false, yes/no, on/off or 1/0.
    #[arg(
        long,
        env = "WEFT_DEBUG_HEADERS",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub debug_headers: bool,
    /// Write no access log lines, whatever the services' `telemetry.accessLog`
    /// says (it is off by default; the control plane turns it on per service).
    /// The variable takes true/false, yes/no, on/off or 1/0.
    #[arg(
        long,
        env = "WEFT_NO_ACCESS_LOG",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub no_access_log: bool,
    /// Log filter (tracing-subscriber syntax).
    #[arg(long, env = "WEFT_LOG", default_value = "info")]
    pub log: String,
    /// Join token for a certificate (`weftctl token create`). Prefer the file form:
    /// a flag's value is visible in the process list. Without a token, identity (and
    /// so mTLS) is off.
    #[arg(long, env = "WEFT_IDENTITY_TOKEN", hide_env_values = true)]
    pub identity_token: Option<String>,
    /// A file holding the join token, read again at every renewal (so a rotated
    /// Kubernetes projected token is picked up).
    #[arg(long, env = "WEFT_IDENTITY_TOKEN_FILE")]
    pub identity_token_file: Option<PathBuf>,
    /// The bearer token `GET /tap` wants from a client that is not on loopback
    /// (`Authorization: Bearer <token>`); without one, only loopback clients may
    /// tap. The value itself, not a file.
    #[arg(long, env = "WEFT_TAP_TOKEN", hide_env_values = true)]
    pub tap_token: Option<String>,
    /// The service account this proxy's identity names, with --namespace:
    /// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
    #[arg(long, env = "WEFT_SERVICE_ACCOUNT", default_value = "default")]
    pub service_account: String,
}

/// The validated configuration, serializable for `/config_dump`.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The control plane's replicas (one entry when a name resolves to all of them).
    pub control_plane: Vec<ControlPlaneAddr>,
    pub node_id: String,
    pub namespace: String,
    /// `--service` and its ports: registered as an endpoint, and the local service.
    pub workload: Option<Workload>,
    /// `--workload-address`. Without `--service` it names the local workload: the
    /// services with an endpoint at this address ([`crate::local::membership`]).
    pub workload_address: Option<IpAddr>,
    pub admin: SocketAddr,
    /// The admin address announced to the control plane; empty if unknown.
    pub admin_advertise: String,
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub inbound_forward: Option<SocketAddr>,
    pub upstreams: Vec<Upstream>,
    #[serde(with = "millis")]
    pub reconnect_max: Duration,
    pub state_dir: Option<PathBuf>,
    #[serde(with = "millis")]
    pub drain_delay: Duration,
    #[serde(with = "millis")]
    pub shutdown_grace_period: Duration,
    /// Zero: no limit.
    #[serde(with = "millis")]
    pub response_idle_timeout: Duration,
    pub static_config: Option<PathBuf>,
    #[serde(with = "millis")]
    pub request_body_timeout: Duration,
    /// `None` until the start sizes it from the open-files limit
    /// ([`crate::limits::connection_limit`]), so that `/config_dump` shows the
    /// limit in force.
    pub max_connections: Option<usize>,
    pub workers: usize,
    /// `--debug-headers`: responses name the route rule and backend that served them.
    pub debug_headers: bool,
    /// `--no-access-log`: services' access log settings are ignored.
    pub no_access_log: bool,
    pub log: String,
    /// `None`: no token, identity disabled.
    pub identity: Option<IdentityConfig>,
    /// `--tap-token`; always `Inline`, so that `/config_dump` redacts it.
    pub tap_token: Option<TokenSource>,
}

/// What the certificate manager needs. The trust domain is not configured: it comes
/// from the control plane's trust bundle, then from the certificate.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityConfig {
    pub token: TokenSource,
    pub service_account: String,
}

/// Where the join token comes from. Neither `Debug` nor `/config_dump` shows an
/// inline token.
#[derive(Clone)]
pub enum TokenSource {
    Inline(String),
    File(PathBuf),
}

impl TokenSource {
    /// The token, read now (a file may have been rotated since the last read).
    pub fn read(&self) -> Result<String, String> {
        match self {
            TokenSource::Inline(token) => Ok(token.clone()),
            TokenSource::File(path) => std::fs::read_to_string(path)
                .map(|text| text.trim().to_owned())
                .map_err(|e| format!("reading the token file {}: {e}", path.display())),
        }
    }
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Inline(_) => f.write_str("Inline(<redacted>)"),
            TokenSource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl Serialize for TokenSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TokenSource::Inline(_) => s.serialize_str("<inline token, redacted>"),
            TokenSource::File(path) => s.serialize_str(&path.display().to_string()),
        }
    }
}

/// The control plane's address, resolved anew on every connection attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlPlaneAddr {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub service: String,
    pub address: IpAddr,
    pub ports: Vec<WorkloadPort>,
    pub region: String,
    pub zone: String,
    pub labels: BTreeMap<String, String>,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkloadPort {
    pub name: String,
    pub port: u16,
}

/// An explicit outbound listener bound to one service (and optionally one of its ports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upstream {
    pub service: String,
    pub port: Option<u16>,
    pub listen: SocketAddr,
}

impl Upstream {
    pub fn service_name(&self) -> ResourceName {
        // Validated in from_args.
        ResourceName::parse(&self.service).unwrap_or_else(|_| ResourceName {
            namespace: "default".into(),
            name: self.service.clone(),
        })
    }
}

impl Config {
    /// Checks every value and returns all the problems, one line each.
    pub fn from_args(args: Args) -> Result<Config, Vec<String>> {
        let mut errors = Vec::new();
        let mut socket = |flag: &str, value: &str| -> SocketAddr {
            value.parse().unwrap_or_else(|_| {
                errors.push(format!("--{flag}: {value:?} is not an IP:port address"));
                SocketAddr::from(([0, 0, 0, 0], 0))
            })
        };
        let admin = socket("admin", &args.admin);
        let outbound = socket("outbound", &args.outbound);
        let inbound = socket("inbound", &args.inbound);
        let inbound_forward = args
            .inbound_forward
            .as_deref()
            .map(|v| socket("inbound-forward", v));

        let control_plane = args
            .control_plane
            .split(',')
            .map(str::trim)
            .filter_map(|entry| {
                parse_control_plane(entry)
                    .map_err(|e| errors.push(format!("--control-plane: {e}")))
                    .ok()
            })
            .collect::<Vec<_>>();
        if control_plane.is_empty() && errors.is_empty() {
            errors.push("--control-plane: no address".to_owned());
        }
        if let Err(e) = validate_label("namespace", &args.namespace) {
            errors.push(format!("--namespace: {}", e.reason));
        }
        let node_id = args.node_id.clone().unwrap_or_else(default_node_id);
        if node_id.is_empty() {
            errors.push("--node-id: must not be empty".to_owned());
        }

        let workload_address = parse_workload_address(&args, &mut errors);
        let workload = parse_workload(&args, workload_address, &mut errors);
        let admin_advertise = admin_advertise(&args, admin, workload_address, &mut errors);

        let mut upstreams = Vec::new();
        for spec in &args.upstreams {
            match parse_upstream(spec) {
                Ok(u) => upstreams.push(u),
                Err(e) => errors.push(format!("--upstream {spec:?}: {e}")),
            }
        }
        let reconnect_max = match args.reconnect_max_ms.parse::<u64>() {
            Ok(ms) if ms >= 10 => Duration::from_millis(ms),
            _ => {
                errors.push(format!(
                    "--reconnect-max-ms: {:?} is not a number of milliseconds >= 10",
                    args.reconnect_max_ms
                ));
                Duration::from_secs(5)
            }
        };
        let mut millis = |flag: &str, value: &str| match value.parse::<u64>() {
            Ok(ms) => Duration::from_millis(ms),
            Err(_) => {
                errors.push(format!(
                    "--{flag}: {value:?} is not a number of milliseconds"
                ));
                Duration::ZERO
            }
        };
        let drain_delay = millis("drain-delay-ms", &args.drain_delay_ms);
        let shutdown_grace_period =
            millis("shutdown-grace-period-ms", &args.shutdown_grace_period_ms);
        let response_idle_timeout =
            millis("response-idle-timeout-ms", &args.response_idle_timeout_ms);
        let request_body_timeout = match args.request_body_timeout_ms.parse::<u64>() {
            Ok(ms) if ms >= 1 => Duration::from_millis(ms),
            _ => {
                errors.push(format!(
                    "--request-body-timeout-ms: {:?} is not a number of milliseconds >= 1",
                    args.request_body_timeout_ms
                ));
                Duration::ZERO
            }
        };
        let max_connections = args.max_connections.as_deref().map(|value| {
            value
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .unwrap_or_else(|| {
                    errors.push(format!("--max-connections: {value:?} is not a number >= 1"));
                    1
                })
        });
        let workers = args.workers.parse::<usize>().unwrap_or_else(|_| {
            errors.push(format!("--workers: {:?} is not a number", args.workers));
            0
        });
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&args.log) {
            errors.push(format!("--log: {e}"));
        }
        let identity = parse_identity(&args, &mut errors);
        let tap_token = match args.tap_token.as_deref().map(str::trim) {
            Some("") => {
                errors.push("--tap-token: must not be empty".to_owned());
                None
            }
            token => token.map(|t| TokenSource::Inline(t.to_owned())),
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Config {
            control_plane,
            node_id,
            namespace: args.namespace,
            workload,
            workload_address,
            admin,
            admin_advertise,
            outbound,
            inbound,
            inbound_forward,
            upstreams,
            reconnect_max,
            state_dir: args.state_dir,
            drain_delay,
            shutdown_grace_period,
            response_idle_timeout,
            static_config: args.static_config,
            request_body_timeout,
            max_connections,
            workers,
            debug_headers: args.debug_headers,
            no_access_log: args.no_access_log,
            log: args.log,
            identity,
            tap_token,
        })
    }
}

fn parse_identity(args: &Args, errors: &mut Vec<String>) -> Option<IdentityConfig> {
    if let Err(e) = validate_label("service_account", &args.service_account) {
        errors.push(format!("--service-account: {}", e.reason));
    }
    let token = match (&args.identity_token, &args.identity_token_file) {
        (Some(_), Some(_)) => {
            errors
                .push("--identity-token and --identity-token-file: give one, not both".to_owned());
            return None;
        }
        (Some(token), None) if token.trim().is_empty() => {
            errors.push("--identity-token: must not be empty".to_owned());
            return None;
        }
        (Some(token), None) => TokenSource::Inline(token.trim().to_owned()),
        // Checked now so a wrong path fails the start, not the first renewal.
        (None, Some(path)) => match TokenSource::File(path.clone()).read() {
            Ok(token) if !token.is_empty() => TokenSource::File(path.clone()),
            Ok(_) => {
                errors.push(format!(
                    "--identity-token-file: {} is empty",
                    path.display()
                ));
                return None;
            }
            Err(e) => {
                errors.push(format!("--identity-token-file: {e}"));
                return None;
            }
        },
        (None, None) => return None,
    };
    Some(IdentityConfig {
        token,
        service_account: args.service_account.clone(),
    })
}

/// The announced admin address: the flag when given (checked as host:port), else
/// the admin listener's, with an unspecified IP replaced by the workload's; empty
/// when that leaves no address others can dial.
fn admin_advertise(
    args: &Args,
    admin: SocketAddr,
    workload_address: Option<IpAddr>,
    errors: &mut Vec<String>,
) -> String {
    if let Some(value) = &args.admin_advertise {
        if let Err(e) = weft_proto::model::validate_host_port("admin-advertise", value) {
            errors.push(format!("--{e}"));
        }
        return value.clone();
    }
    if admin.port() == 0 {
        return String::new();
    }
    if !admin.ip().is_unspecified() {
        return admin.to_string();
    }
    workload_address
        .map(|ip| SocketAddr::new(ip, admin.port()).to_string())
        .unwrap_or_default()
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "proxy".to_owned());
    format!("{host}-{}", std::process::id())
}

fn parse_control_plane(text: &str) -> Result<ControlPlaneAddr, String> {
    let rest = text
        .strip_prefix("http://")
        .unwrap_or(text)
        .trim_end_matches('/');
    if text.starts_with("https://") {
        return Err("https is not supported yet; use host:port".to_owned());
    }
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} has no port (expected host:port)"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{text:?} has an invalid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{text:?} has no host"));
    }
    Ok(ControlPlaneAddr {
        host: host.to_owned(),
        port,
    })
}

/// `--workload-address`; an empty value counts as unset (see [`parse_workload`]).
fn parse_workload_address(args: &Args, errors: &mut Vec<String>) -> Option<IpAddr> {
    let text = args.workload_address.as_deref().filter(|a| !a.is_empty())?;
    text.parse()
        .map_err(|_| errors.push(format!("--workload-address: {text:?} is not an IP address")))
        .ok()
}

fn parse_workload(
    args: &Args,
    address: Option<IpAddr>,
    errors: &mut Vec<String>,
) -> Option<Workload> {
    // An empty value counts as unset: a Kubernetes pod template fills these from
    // the pod's annotations, which a pod may not have. The address alone (the pod
    // IP, always there) registers nothing: the local services are learned from the
    // endpoints at that address instead.
    let workload_ports: Vec<&String> = args
        .workload_ports
        .iter()
        .filter(|p| !p.is_empty())
        .collect();
    let Some(service) = args.service.clone().filter(|s| !s.is_empty()) else {
        if !workload_ports.is_empty() {
            errors.push("--workload-port needs --service".to_owned());
        }
        return None;
    };
    if let Err(e) = validate_label("service", &service) {
        errors.push(format!("--service: {}", e.reason));
    }
    let address = address.unwrap_or_else(|| {
        if args.workload_address.as_deref().is_none_or(str::is_empty) {
            errors.push("--service needs --workload-address".to_owned());
        }
        IpAddr::from([0, 0, 0, 0])
    });
    if workload_ports.is_empty() {
        errors.push("--service needs at least one --workload-port".to_owned());
    }
    let mut ports = Vec::new();
    for spec in workload_ports {
        let (name, port) = spec.split_once('=').unwrap_or(("", spec));
        match port.parse::<u16>() {
            Ok(port) if port != 0 => ports.push(WorkloadPort {
                name: name.to_owned(),
                port,
            }),
            _ => errors.push(format!(
                "--workload-port: {spec:?} is not PORT or NAME=PORT"
            )),
        }
    }
    let mut labels = BTreeMap::new();
    for spec in &args.labels {
        match spec.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                labels.insert(k.to_owned(), v.to_owned());
            }
            _ => errors.push(format!("--label: {spec:?} is not KEY=VALUE")),
        }
    }
    let weight = match args.weight.parse::<u32>() {
        Ok(w) if (1..=10_000).contains(&w) => w,
        _ => {
            errors.push(format!("--weight: {:?} is not in 1..=10000", args.weight));
            1
        }
    };
    Some(Workload {
        service,
        address,
        ports,
        region: args.region.clone(),
        zone: args.zone.clone(),
        labels,
        weight,
    })
}

fn parse_upstream(spec: &str) -> Result<Upstream, String> {
    let (target, listen) = spec
        .split_once('=')
        .ok_or("expected SERVICE[:PORT]=LISTEN_ADDR")?;
    let listen: SocketAddr = listen
        .parse()
        .map_err(|_| format!("{listen:?} is not an IP:port address"))?;
    let (service, port) = match target.rsplit_once(':') {
        Some((service, port)) => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{port:?} is not a port"))?;
            (service, Some(port))
        }
        None => (target, None),
    };
    ResourceName::parse(service).map_err(|e| e.to_string())?;
    Ok(Upstream {
        service: service.to_owned(),
        port,
        listen,
    })
}

mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["weft-proxy"];
        argv.extend_from_slice(extra);
        Args::parse_from(argv)
    }

    #[test]
    fn every_invalid_value_is_reported() {
        let errors = Config::from_args(args(&[
            "--admin",
            "nope",
            "--control-plane",
            "cp",
            "--upstream",
            "orders",
            "--reconnect-max-ms",
            "x",
        ]))
        .expect_err("invalid");
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("--admin"));
    }

    #[test]
    fn identity_flags_are_checked_and_the_token_never_shown() {
        let errors = Config::from_args(args(&[
            "--identity-token",
            "weft.x.y",
            "--identity-token-file",
            "/nonexistent",
            "--service-account",
            "Bad_SA",
        ]))
        .expect_err("invalid");
        assert_eq!(errors.len(), 2, "{errors:?}");
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing");
        let errors = Config::from_args(args(&[
            "--identity-token-file",
            missing.to_str().expect("utf-8"),
        ]))
        .expect_err("invalid");
        assert!(errors[0].contains("missing"), "{errors:?}");

        let config =
            Config::from_args(args(&["--identity-token", "weft.secret-value"])).expect("valid");
        let identity = config.identity.clone().expect("identity on");
        assert_eq!(identity.service_account, "default");
        let dumped = serde_json::to_string(&config).expect("json");
        assert!(!dumped.contains("secret-value"), "{dumped}");
        assert!(!format!("{config:?}").contains("secret-value"));
        assert!(Config::from_args(args(&[]))
            .expect("valid")
            .identity
            .is_none());
    }

    #[test]
    fn debug_headers_are_off_unless_asked_for() {
        assert!(!Config::from_args(args(&[])).expect("valid").debug_headers);
        let config = Config::from_args(args(&["--debug-headers"])).expect("valid");
        assert!(config.debug_headers);
        let dumped = serde_json::to_value(&config).expect("json");
        assert_eq!(dumped["debug_headers"], true);
    }

    #[test]
    fn access_logs_follow_the_control_plane_unless_turned_off() {
        assert!(!Config::from_args(args(&[])).expect("valid").no_access_log);
        let config = Config::from_args(args(&["--no-access-log"])).expect("valid");
        assert!(config.no_access_log);
    }

    #[test]
    fn the_tap_token_is_kept_but_never_dumped() {
        let config = Config::from_args(args(&["--tap-token", " s3cret "])).expect("valid");
        let token = config.tap_token.as_ref().expect("a token").read();
        assert_eq!(token.as_deref(), Ok("s3cret"));
        let dumped = serde_json::to_string(&config).expect("json");
        assert!(!dumped.contains("s3cret"), "{dumped}");
        let errors = Config::from_args(args(&["--tap-token", " "])).expect_err("empty");
        assert_eq!(errors, ["--tap-token: must not be empty"]);
    }

    #[test]
    fn edge_limits_parse_and_default_as_the_data_path_does() {
        let config = Config::from_args(args(&[])).expect("valid");
        let settings = crate::dataplane::Settings::default();
        assert_eq!(config.request_body_timeout, settings.request_body_timeout);
        assert_eq!(config.max_connections, None);
        let config = Config::from_args(args(&[
            "--request-body-timeout-ms",
            "250",
            "--max-connections",
            "10",
        ]))
        .expect("valid");
        assert_eq!(config.request_body_timeout, Duration::from_millis(250));
        assert_eq!(config.max_connections, Some(10));
        let dumped = serde_json::to_value(&config).expect("json");
        assert_eq!(dumped["request_body_timeout"], 250);
        assert_eq!(dumped["max_connections"], 10);
        let errors = Config::from_args(args(&[
            "--request-body-timeout-ms",
            "0",
            "--max-connections",
            "none",
        ]))
        .expect_err("invalid");
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn an_address_alone_registers_nothing_and_names_the_pod() {
        // What a pod template gives every pod: the pod IP, and empty annotations
        // where a pod has none. The services come from the endpoints at that IP.
        let config = Config::from_args(args(&[
            "--service",
            "",
            "--workload-port",
            "",
            "--workload-address",
            "10.1.2.3",
        ]))
        .expect("valid");
        assert!(config.workload.is_none(), "nothing to register");
        assert_eq!(config.workload_address, Some([10, 1, 2, 3].into()));
        let dumped = serde_json::to_value(&config).expect("json");
        assert_eq!(dumped["workload_address"], "10.1.2.3");
        let config = Config::from_args(args(&["--workload-address", ""])).expect("valid");
        assert_eq!(config.workload_address, None, "empty is unset");

        let errors = Config::from_args(args(&["--workload-port", "http=8080"]))
            .expect_err("ports without a service");
        assert_eq!(errors, ["--workload-port needs --service"]);
        let errors =
            Config::from_args(args(&["--workload-address", "pod-ip"])).expect_err("not an address");
        assert_eq!(
            errors,
            ["--workload-address: \"pod-ip\" is not an IP address"]
        );
        let errors = Config::from_args(args(&["--service", "web", "--workload-port", "80"]))
            .expect_err("a service without an address");
        assert_eq!(errors, ["--service needs --workload-address"]);
    }

    #[test]
    fn admin_advertise_defaults_to_a_dialable_admin_address() {
        let advertised = |extra: &[&str]| {
            Config::from_args(args(extra))
                .expect("valid")
                .admin_advertise
        };
        assert_eq!(advertised(&[]), "127.0.0.1:15020");
        assert_eq!(advertised(&["--admin", "0.0.0.0:9000"]), "");
        let workload = [
            "--admin",
            "0.0.0.0:9000",
            "--service",
            "web",
            "--workload-address",
            "10.0.0.7",
            "--workload-port",
            "8080",
        ];
        assert_eq!(advertised(&workload), "10.0.0.7:9000");
        assert_eq!(
            advertised(&["--admin-advertise", "web-0.shop:15020"]),
            "web-0.shop:15020"
        );
        let errors = Config::from_args(args(&["--admin-advertise", "web-0"])).expect_err("no port");
        assert!(errors[0].starts_with("--admin-advertise: "), "{errors:?}");
    }

    #[test]
    fn workload_and_upstreams_parse() {
        let config = Config::from_args(args(&[
            "--control-plane",
            "http://weft-cp.weft-system.svc:15010",
            "--service",
            "orders",
            "--workload-address",
            "10.0.0.7",
            "--workload-port",
            "http=8080",
            "--upstream",
            "shop/users:80=127.0.0.1:9001",
        ]))
        .expect("valid");
        assert_eq!(config.control_plane[0].host, "weft-cp.weft-system.svc");
        let workload = config.workload.expect("workload");
        assert_eq!(workload.ports[0].name, "http");
        assert_eq!(config.workload_address, Some(workload.address));
        assert_eq!(config.upstreams[0].port, Some(80));
        assert_eq!(config.upstreams[0].service_name().to_string(), "shop/users");
    }
}
