//! `weftctl status`: the connected proxies and how far each is in sync, as a table
//! (with every unresolved NACK printed in full under its proxy) or as JSON.

use std::collections::BTreeMap;

use serde::Serialize;
use weft_proto::resource::{short_type, Kind};
use weft_proto::v1;
use weft_proto::v1::proxy_status::SyncState;

use super::table::Table;

/// The JSON form: the proto's fields, with enums and type URLs as readable strings.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyJson {
    pub id: String,
    pub workload: Option<WorkloadJson>,
    pub build: String,
    /// Whether the proxy's build differs from the control plane's (restart its pod
    /// to pick up the current proxy).
    pub outdated: bool,
    /// Where the proxy's admin HTTP (/metrics) is reached, "" if it did not say.
    pub admin_address: String,
    /// Seconds since the Unix epoch.
    pub connected_at: i64,
    pub state: &'static str,
    pub types: Vec<TypeJson>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadJson {
    pub namespace: String,
    pub service: String,
    pub address: String,
    pub ports: Vec<WorkloadPortJson>,
    pub locality: Option<LocalityJson>,
    pub labels: BTreeMap<String, String>,
    pub weight: u32,
    /// "healthy", "unhealthy" or "draining" as the proxy last reported; empty when
    /// it never did (healthy).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub health: String,
}

#[derive(Debug, Serialize)]
pub struct WorkloadPortJson {
    pub name: String,
    pub port: u32,
}

#[derive(Debug, Serialize)]
pub struct LocalityJson {
    pub region: String,
    pub zone: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeJson {
    #[serde(rename = "type")]
    pub type_name: String,
    pub acked_version: u64,
    pub latest_version: u64,
    pub pending_pushes: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_nack: String,
}

pub fn state_name(state: i32) -> &'static str {
    match SyncState::try_from(state) {
        Ok(SyncState::Synced) => "SYNCED",
        Ok(SyncState::Stale) => "STALE",
        Ok(SyncState::Nacked) => "NACKED",
        Ok(SyncState::Unspecified) | Err(_) => "UNKNOWN",
    }
}

/// `shop/orders 10.0.0.5:8080,9090`, or `-` for a proxy that fronts no workload.
fn workload_summary(workload: Option<&v1::Workload>) -> String {
    let Some(w) = workload.filter(|w| !w.service.is_empty()) else {
        return "-".to_owned();
    };
    let ports: Vec<String> = w.ports.iter().map(|p| p.port.to_string()).collect();
    let address = match (w.address.as_str(), ports.is_empty()) {
        ("", _) => String::new(),
        (address, true) => format!(" {address}"),
        (address, false) if address.contains(':') => format!(" [{address}]:{}", ports.join(",")),
        (address, false) => format!(" {address}:{}", ports.join(",")),
    };
    // Only a workload that is not serving says so: the common case stays short.
    let health = match w.health.as_str() {
        "" | "healthy" => String::new(),
        other => format!(" ({other})"),
    };
    format!("{}/{}{address}{health}", w.namespace, w.service)
}

/// `3m12s`-style age of a connection, as kubectl prints ages.
pub fn age(connected_at: i64, now: i64) -> String {
    let seconds = now.saturating_sub(connected_at).max(0);
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The proxy's build, marked when it is not the control plane's `current` one.
fn version(build: &str, current: &str) -> String {
    if is_outdated(build, current) {
        format!("{build} (outdated)")
    } else {
        build.to_owned()
    }
}

/// A proxy runs another build than the control plane (an empty one is unknown).
fn is_outdated(build: &str, current: &str) -> bool {
    !current.is_empty() && build != current
}

/// One column per known kind (`acked/latest`), then pending pushes; a NACK's message
/// goes on its own line under the row, since it is the thing an operator needs to read.
pub fn table(proxies: &[v1::ProxyStatus], current: &str, now: i64) -> Table {
    let mut headers = vec!["ID", "WORKLOAD", "STATE", "VERSION"];
    headers.extend(Kind::ALL.map(kind_header));
    headers.extend(["PENDING", "AGE"]);
    let mut table = Table::new(headers);
    for proxy in proxies {
        let mut row = vec![
            proxy.id.clone(),
            workload_summary(proxy.workload.as_ref()),
            state_name(proxy.state).to_owned(),
            version(&proxy.build, current),
        ];
        for kind in Kind::ALL {
            row.push(
                proxy
                    .types
                    .iter()
                    .find(|t| t.type_url == kind.type_url())
                    .map(|t| format!("{}/{}", t.acked_version, t.latest_version))
                    .unwrap_or_else(|| "-".to_owned()),
            );
        }
        let pending: u32 = proxy.types.iter().map(|t| t.pending_pushes).sum();
        row.push(pending.to_string());
        row.push(age(proxy.connected_at, now));
        table.row(row);
        for t in proxy.types.iter().filter(|t| !t.last_nack.is_empty()) {
            table.note(format!("NACK {}: {}", short_type(&t.type_url), t.last_nack));
        }
    }
    table
}

fn kind_header(kind: Kind) -> &'static str {
    match kind {
        Kind::Service => "SERVICES",
        Kind::Endpoints => "ENDPOINTS",
        Kind::TrustBundle => "BUNDLE",
        Kind::AuthorizationPolicy => "AUTHZ",
        Kind::HttpRoute => "HTTPROUTES",
        Kind::GrpcRoute => "GRPCROUTES",
    }
}

pub fn to_json(proxies: &[v1::ProxyStatus], current: &str) -> Vec<ProxyJson> {
    proxies
        .iter()
        .map(|p| ProxyJson {
            id: p.id.clone(),
            workload: p.workload.as_ref().map(|w| WorkloadJson {
                namespace: w.namespace.clone(),
                service: w.service.clone(),
                address: w.address.clone(),
                ports: w
                    .ports
                    .iter()
                    .map(|p| WorkloadPortJson {
                        name: p.name.clone(),
                        port: p.port,
                    })
                    .collect(),
                locality: w.locality.as_ref().map(|l| LocalityJson {
                    region: l.region.clone(),
                    zone: l.zone.clone(),
                }),
                labels: w
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                weight: w.weight,
                health: w.health.clone(),
            }),
            build: p.build.clone(),
            outdated: is_outdated(&p.build, current),
            admin_address: p.admin_address.clone(),
            connected_at: p.connected_at,
            state: state_name(p.state),
            types: p
                .types
                .iter()
                .map(|t| TypeJson {
                    type_name: short_type(&t.type_url).to_owned(),
                    acked_version: t.acked_version,
                    latest_version: t.latest_version,
                    pending_pushes: t.pending_pushes,
                    last_nack: t.last_nack.clone(),
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(id: &str, state: SyncState, nack: &str) -> v1::ProxyStatus {
        v1::ProxyStatus {
            id: id.into(),
            workload: Some(v1::Workload {
                namespace: "shop".into(),
                service: "orders".into(),
                address: "10.0.0.5".into(),
                ports: vec![
                    v1::WorkloadPort {
                        name: "http".into(),
                        port: 8080,
                    },
                    v1::WorkloadPort {
                        name: "grpc".into(),
                        port: 9090,
                    },
                ],
                ..Default::default()
            }),
            build: "0.1.0".into(),
            admin_address: "10.0.0.5:15020".into(),
            connected_at: 1_000,
            state: state as i32,
            types: vec![
                v1::TypeSyncStatus {
                    type_url: Kind::Service.type_url().into(),
                    acked_version: 7,
                    latest_version: 9,
                    pending_pushes: 1,
                    last_nack: nack.into(),
                },
                v1::TypeSyncStatus {
                    type_url: Kind::Endpoints.type_url().into(),
                    acked_version: 4,
                    latest_version: 4,
                    pending_pushes: 0,
                    last_nack: String::new(),
                },
            ],
        }
    }

    #[test]
    fn table_shows_versions_state_and_nack_messages_in_full() {
        let nack = "shop/orders: load_balancer: unknown policy \"maglev\" in this build";
        let client = v1::ProxyStatus {
            id: "client-1".into(),
            build: "0.0.9".into(),
            state: SyncState::Synced as i32,
            connected_at: 1_000,
            ..Default::default()
        };
        let text = table(
            &[proxy("orders-1.shop", SyncState::Nacked, nack), client],
            "0.1.0",
            1_192,
        )
        .render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "ID",
                "WORKLOAD",
                "STATE",
                "VERSION",
                "SERVICES",
                "ENDPOINTS",
                "BUNDLE",
                "AUTHZ",
                "HTTPROUTES",
                "GRPCROUTES",
                "PENDING",
                "AGE"
            ]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "orders-1.shop",
                "shop/orders",
                "10.0.0.5:8080,9090",
                "NACKED",
                "0.1.0",
                "7/9",
                "4/4",
                "-",
                "-",
                "-",
                "-",
                "1",
                "3m12s"
            ]
        );
        assert_eq!(lines[2], format!("    NACK weft.v1.Service: {nack}"));
        assert_eq!(
            lines[3].split_whitespace().collect::<Vec<_>>(),
            [
                "client-1",
                "-",
                "SYNCED",
                "0.0.9",
                "(outdated)",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-",
                "0",
                "3m12s"
            ]
        );
    }

    #[test]
    fn json_names_states_and_types() {
        let json = serde_json::to_value(to_json(&[proxy("p", SyncState::Stale, "")], "0.2.0"))
            .expect("json");
        assert_eq!(json[0]["state"], "STALE");
        assert_eq!(json[0]["outdated"], true);
        assert_eq!(json[0]["types"][0]["type"], "weft.v1.Service");
        assert_eq!(json[0]["types"][0]["ackedVersion"], 7);
        assert!(json[0]["types"][0].get("lastNack").is_none());
        assert_eq!(json[0]["workload"]["ports"][1]["port"], 9090);
        assert_eq!(json[0]["adminAddress"], "10.0.0.5:15020");
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age(100, 100), "0s");
        assert_eq!(age(100, 159), "59s");
        assert_eq!(age(0, 3_599), "59m59s");
        assert_eq!(age(0, 7_260), "2h1m");
        assert_eq!(age(0, 90_000), "1d1h");
        assert_eq!(
            age(200, 100),
            "0s",
            "a clock behind the server's is not negative"
        );
    }
}
