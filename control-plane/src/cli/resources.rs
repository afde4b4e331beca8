//! How `weftctl get` prints resources: a table for people, or the documents of
//! [`super::document`] as YAML (which `apply` reads back) or JSON.

use weft_proto::resource::Kind;

use super::document::{
    self, AuthorizationPolicyDocument, BackendRefSpec, Document, EndpointsDocument,
    ServiceDocument, ServiceRefSpec, TrustBundleDocument,
};
use super::table::Table;
use super::Format;

/// An endpoints row lists this many addresses, then how many more there are.
const ADDRESSES_SHOWN: usize = 4;

/// Renders `documents`; `single` is a `get KIND NAME`, printed as one object in JSON
/// rather than a list.
pub fn render(
    kind: Kind,
    documents: &[Document],
    format: Format,
    single: bool,
) -> Result<String, String> {
    match format {
        Format::Table => Ok(table(kind, documents).render()),
        Format::Yaml => document::to_yaml(documents).map_err(|e| e.to_string()),
        Format::Json => {
            let json = match documents {
                [document] if single => serde_json::to_string_pretty(document),
                _ => serde_json::to_string_pretty(documents),
            };
            json.map(|text| text + "\n").map_err(|e| e.to_string())
        }
    }
}

pub fn table(kind: Kind, documents: &[Document]) -> Table {
    let mut table = match kind {
        Kind::Service => Table::new([
            "NAMESPACE",
            "NAME",
            "VERSION",
            "PORTS",
            "VIRTUAL IPS",
            "HOSTNAMES",
            "LOAD BALANCER",
        ]),
        Kind::Endpoints => Table::new([
            "NAMESPACE",
            "NAME",
            "VERSION",
            "ENDPOINTS",
            "HEALTHY",
            "ADDRESSES",
        ]),
        Kind::TrustBundle => Table::new(["NAMESPACE", "NAME", "VERSION", "TRUST DOMAIN", "ROOTS"]),
        Kind::AuthorizationPolicy => Table::new([
            "NAMESPACE",
            "NAME",
            "VERSION",
            "SERVICE",
            "PORT",
            "ALLOW",
            "DEFAULT",
        ]),
        Kind::HttpRoute | Kind::GrpcRoute => Table::new([
            "NAMESPACE",
            "NAME",
            "VERSION",
            "PARENTS",
            "HOSTNAMES",
            "RULES",
            "BACKENDS",
        ]),
    };
    for document in documents {
        match document {
            Document::Service(service) => table.row(service_row(service)),
            Document::Endpoints(endpoints) => table.row(endpoints_row(endpoints)),
            Document::TrustBundle(bundle) => table.row(trust_bundle_row(bundle)),
            Document::AuthorizationPolicy(policy) => table.row(policy_row(policy)),
            Document::HttpRoute(r) => table.row(route_row(
                &r.metadata,
                &r.spec.parent_refs,
                &r.spec.hostnames,
                r.spec
                    .rules
                    .iter()
                    .map(|r| r.backend_refs.as_slice())
                    .collect(),
            )),
            Document::GrpcRoute(r) => table.row(route_row(
                &r.metadata,
                &r.spec.parent_refs,
                &r.spec.hostnames,
                r.spec
                    .rules
                    .iter()
                    .map(|r| r.backend_refs.as_slice())
                    .collect(),
            )),
        };
    }
    table
}

fn common(metadata: &document::Metadata) -> [String; 3] {
    [
        metadata.namespace.clone(),
        metadata.name.clone(),
        metadata
            .version
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".to_owned()),
    ]
}

fn or_none(items: Vec<String>) -> String {
    if items.is_empty() {
        "<none>".to_owned()
    } else {
        items.join(",")
    }
}

fn service_row(service: &ServiceDocument) -> Vec<String> {
    let spec = &service.spec;
    // `http:80/http1`, like kubectl's `80/TCP` with the port's name in front.
    let ports = spec
        .ports
        .iter()
        .map(|p| match p.name.as_str() {
            "" => format!("{}/{}", p.port, p.protocol),
            name => format!("{name}:{}/{}", p.port, p.protocol),
        })
        .collect();
    let load_balancer = match spec.load_balancer.as_str() {
        "" => weft_proto::model::PolicyName::DEFAULT.to_owned(),
        policy => policy.to_owned(),
    };
    let mut row = common(&service.metadata).to_vec();
    row.extend([
        or_none(ports),
        or_none(spec.virtual_ips.clone()),
        or_none(spec.hostnames.clone()),
        load_balancer,
    ]);
    row
}

fn endpoints_row(endpoints: &EndpointsDocument) -> Vec<String> {
    let all = &endpoints.spec.endpoints;
    let healthy = all
        .iter()
        .filter(|e| e.health.is_empty() || e.health == "healthy")
        .count();
    let mut addresses: Vec<String> = all
        .iter()
        .take(ADDRESSES_SHOWN)
        .map(|e| {
            let address = if e.address.contains(':') {
                format!("[{}]:{}", e.address, e.port)
            } else {
                format!("{}:{}", e.address, e.port)
            };
            match e.health.as_str() {
                "" | "healthy" => address,
                health => format!("{address} ({health})"),
            }
        })
        .collect();
    if all.len() > ADDRESSES_SHOWN {
        addresses.push(format!("+{} more", all.len() - ADDRESSES_SHOWN));
    }
    let mut row = common(&endpoints.metadata).to_vec();
    row.extend([
        all.len().to_string(),
        healthy.to_string(),
        or_none(addresses),
    ]);
    row
}

fn trust_bundle_row(bundle: &TrustBundleDocument) -> Vec<String> {
    let mut row = common(&bundle.metadata).to_vec();
    row.extend([
        bundle.spec.trust_domain.clone(),
        bundle.spec.roots.len().to_string(),
    ]);
    row
}

fn policy_row(policy: &AuthorizationPolicyDocument) -> Vec<String> {
    let spec = &policy.spec;
    let port = match spec.port {
        0 => "*".to_owned(),
        port => port.to_string(),
    };
    let default_action = match spec.default_action.as_str() {
        "" => "deny".to_owned(),
        action => action.to_owned(),
    };
    let mut row = common(&policy.metadata).to_vec();
    row.extend([
        spec.service.clone(),
        port,
        or_none(spec.allow.clone()),
        default_action,
    ]);
    row
}

/// A route's parents as `service:port` (`namespace/service` when elsewhere) and
/// its backends, each once, with their weight when it is not 1.
fn route_row(
    metadata: &document::Metadata,
    parents: &[ServiceRefSpec],
    hostnames: &[String],
    rules: Vec<&[BackendRefSpec]>,
) -> Vec<String> {
    let service = |namespace: &str, name: &str| match namespace {
        "" => name.to_owned(),
        namespace if namespace == metadata.namespace => name.to_owned(),
        namespace => format!("{namespace}/{name}"),
    };
    let parents = parents
        .iter()
        .map(|p| match p.port {
            0 => service(&p.namespace, &p.name),
            port => format!("{}:{port}", service(&p.namespace, &p.name)),
        })
        .collect();
    let mut shown: Vec<String> = Vec::new();
    for backend in rules.iter().copied().flatten() {
        let text = match backend.weight {
            None | Some(1) => service(&backend.namespace, &backend.name),
            Some(weight) => format!("{} ({weight})", service(&backend.namespace, &backend.name)),
        };
        if !shown.contains(&text) {
            shown.push(text);
        }
    }
    let mut row = common(metadata).to_vec();
    row.extend([
        or_none(parents),
        or_none(hostnames.to_vec()),
        rules.len().to_string(),
        if shown.is_empty() {
            "<parent>".to_owned()
        } else {
            shown.join(",")
        },
    ]);
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documents() -> Vec<Document> {
        let mut documents = document::parse(
            "kind: Service
metadata: {name: orders, namespace: shop}
spec:
  ports:
  - {name: http, port: 80, protocol: http1}
  - {name: grpc, port: 9090, protocol: grpc}
  virtualIPs: [10.96.0.10]
---
kind: Endpoints
metadata: {name: orders, namespace: shop}
spec:
  endpoints:
  - {address: 10.0.0.1, port: 8080, portName: http}
  - {address: 10.0.0.2, port: 8080, portName: http, health: unhealthy}
  - {address: 'fd00::3', port: 8080, portName: http}
  - {address: 10.0.0.4, port: 8080, portName: http}
  - {address: 10.0.0.5, port: 8080, portName: http}
  - {address: 10.0.0.6, port: 8080, portName: http}
",
        )
        .expect("parse");
        for (i, document) in documents.iter_mut().enumerate() {
            match document {
                Document::Service(d) => d.metadata.version = Some(i as u64 + 1),
                Document::Endpoints(d) => d.metadata.version = Some(i as u64 + 1),
                Document::TrustBundle(d) => d.metadata.version = Some(i as u64 + 1),
                Document::AuthorizationPolicy(d) => d.metadata.version = Some(i as u64 + 1),
                Document::HttpRoute(d) => d.metadata.version = Some(i as u64 + 1),
                Document::GrpcRoute(d) => d.metadata.version = Some(i as u64 + 1),
            }
        }
        documents
    }

    #[test]
    fn services_table_summarizes_ports_addresses_and_policy() {
        let documents = documents();
        assert_eq!(
            table(Kind::Service, &documents[..1]).render(),
            "NAMESPACE   NAME     VERSION   PORTS                          VIRTUAL IPS   HOSTNAMES   LOAD BALANCER\n\
             shop        orders   1         http:80/http1,grpc:9090/grpc   10.96.0.10    <none>      p2c_ewma\n"
        );
    }

    #[test]
    fn endpoints_table_counts_and_lists_a_few_addresses() {
        let documents = documents();
        let text = table(Kind::Endpoints, &documents[1..]).render();
        let row = text.lines().nth(1).expect("a row");
        let cells: Vec<&str> = row
            .split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cells,
            [
                "shop",
                "orders",
                "2",
                "6",
                "5",
                "10.0.0.1:8080,10.0.0.2:8080 (unhealthy),[fd00::3]:8080,10.0.0.4:8080,+2 more"
            ]
        );
    }

    #[test]
    fn routes_table_lists_parents_rules_and_weighted_backends() {
        let documents = document::parse(
            "kind: HTTPRoute
metadata: {name: split, namespace: shop, version: 4}
spec:
  parentRefs: [{name: orders, port: 80}, {name: users, namespace: accounts}]
  rules:
  - backendRefs: [{name: orders-v1, weight: 90}, {name: orders-v2, weight: 10}]
  - backendRefs: [{name: orders-v1, weight: 90}, {name: shadow, namespace: test}]
---
kind: GRPCRoute
metadata: {name: refunds, namespace: shop, version: 5}
spec:
  parentRefs: [{name: payments}]
  hostnames: [payments.shop]
  rules: [{}]
",
        )
        .expect("parse");
        assert_eq!(
            table(Kind::HttpRoute, &documents).render(),
            "NAMESPACE   NAME      VERSION   PARENTS                    HOSTNAMES       RULES   BACKENDS\n\
             shop        split     4         orders:80,accounts/users   <none>          2       orders-v1 (90),orders-v2 (10),test/shadow\n\
             shop        refunds   5         payments                   payments.shop   1       <parent>\n"
        );
    }

    #[test]
    fn json_is_a_list_unless_one_resource_was_named() {
        let documents = documents();
        let list = render(Kind::Service, &documents[..1], Format::Json, false).expect("json");
        assert!(list.starts_with('['), "{list}");
        let one = render(Kind::Service, &documents[..1], Format::Json, true).expect("json");
        let value: serde_json::Value = serde_json::from_str(&one).expect("valid JSON");
        assert_eq!(value["metadata"]["name"], "orders");
    }

    #[test]
    fn yaml_output_parses_back() {
        let documents = documents();
        let yaml = render(Kind::Service, &documents, Format::Yaml, false).expect("yaml");
        assert_eq!(document::parse(&yaml).expect("parse"), documents);
    }
}
