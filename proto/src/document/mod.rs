//! The YAML documents of `weftctl apply` and `weftctl get -o yaml|json`, and their
//! mapping to and from the weft.v1 messages.
//!
//! The shape follows Kubernetes (`kind`, `metadata`, `spec`) so that operators read it
//! without a manual. Field names are camelCase; unknown fields are rejected so a typo
//! is an error rather than a setting silently ignored. Values are *not* validated here:
//! the control plane validates every write and names the resource and field, and a
//! second copy of those rules in the CLI would drift from the server's.
//!
//! Documents are parsed in two passes over the same text: the first reads only `kind`,
//! the second deserializes each document straight into its kind's type, so serde_yaml's
//! errors keep their path (`spec.ports[0]`) and line. Going through an intermediate
//! `serde_yaml::Value` would lose both.

use std::collections::BTreeMap;

use crate::resource::{to_any, Kind};
use crate::v1;
use serde::{Deserialize, Serialize};

mod filter;
mod policy;
mod resilience;
mod route;
mod telemetry;
#[cfg(test)]
mod tests;

pub use filter::{
    FaultAbortSpec, FaultDelaySpec, FaultSpec, FilterSpec, GrpcRetrySpec, HeaderModifierSpec,
    HeaderSpec, HttpRetrySpec, LocalRateLimitSpec, PathModifierSpec, RequestMirrorSpec,
    RequestRedirectSpec, RouteTimeoutsSpec, UrlRewriteSpec,
};
pub use policy::ServicePolicySpec;
pub use resilience::{
    CircuitBreakersSpec, LocalityPolicySpec, OutlierDetectionSpec, RetriesSpec, TimeoutsSpec,
};
pub use route::{
    rfc3339, BackendRefSpec, GrpcMatchSpec, GrpcMethodSpec, GrpcRouteDocument, GrpcRouteSpec,
    GrpcRuleSpec, HttpMatchSpec, HttpRouteDocument, HttpRouteSpec, HttpRuleSpec, PathMatchSpec,
    ServiceRefSpec, ValueMatchSpec,
};
pub use telemetry::{AccessLogSpec, TelemetrySpec, TracingSpec};

/// The namespace of a document whose metadata names none.
pub const DEFAULT_NAMESPACE: &str = "default";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// `document` counts from 1, empty documents included, as a reader counts `---`s.
    #[error("document {document}: {message}")]
    Document { document: usize, message: String },
    #[error("no resources found")]
    Empty,
}

/// One document: a resource of a known kind.
// A document lives for one CLI command or one file load; boxing the service
// variant would only add indirection to every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Document {
    Service(ServiceDocument),
    Endpoints(EndpointsDocument),
    TrustBundle(TrustBundleDocument),
    AuthorizationPolicy(AuthorizationPolicyDocument),
    HttpRoute(HttpRouteDocument),
    GrpcRoute(GrpcRouteDocument),
}

/// Which callers may reach a service:
/// ```yaml
/// kind: AuthorizationPolicy
/// metadata: {name: orders-callers, namespace: shop}
/// spec:
///   service: shop/orders        # or `orders`, in the policy's namespace
///   port: 8080                  # optional: one port of the service
///   allow:
///   - spiffe://cluster.local/ns/shop/sa/web
///   - spiffe://cluster.local/ns/billing/*
///   defaultAction: deny         # the default; or allow
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationPolicyDocument {
    pub kind: String,
    pub metadata: Metadata,
    pub spec: AuthorizationPolicySpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// The service guarded: `namespace/name`, or `name` in the policy's namespace.
    #[serde(default)]
    pub service: String,
    /// 0 (absent): every port of the service.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port: u32,
    /// The callers' SPIFFE IDs; one ending in `/*` allows every ID under it.
    #[serde(default)]
    pub allow: Vec<String>,
    /// deny (the default when absent) | allow.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_action: String,
}

impl AuthorizationPolicyDocument {
    pub fn to_proto(&self) -> v1::AuthorizationPolicy {
        v1::AuthorizationPolicy {
            namespace: self.metadata.namespace.clone(),
            name: self.metadata.name.clone(),
            service: self.spec.service.clone(),
            port: self.spec.port,
            allow: self.spec.allow.clone(),
            default_action: self.spec.default_action.clone(),
        }
    }

    pub fn from_proto(
        message: &v1::AuthorizationPolicy,
        version: Option<u64>,
    ) -> AuthorizationPolicyDocument {
        AuthorizationPolicyDocument {
            kind: Kind::AuthorizationPolicy.as_str().to_owned(),
            metadata: Metadata {
                name: message.name.clone(),
                namespace: message.namespace.clone(),
                version,
                creation_timestamp: None,
            },
            spec: AuthorizationPolicySpec {
                service: message.service.clone(),
                port: message.port,
                allow: message.allow.clone(),
                default_action: message.default_action.clone(),
            },
        }
    }
}

/// Published by the control plane; `get` shows it, `apply` of one is refused by the
/// server (the CA owns it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustBundleDocument {
    pub kind: String,
    pub metadata: Metadata,
    pub spec: TrustBundleSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrustBundleSpec {
    #[serde(default)]
    pub trust_domain: String,
    /// PEM certificates.
    #[serde(default)]
    pub roots: Vec<String>,
}

impl TrustBundleDocument {
    pub fn to_proto(&self) -> v1::TrustBundle {
        v1::TrustBundle {
            namespace: self.metadata.namespace.clone(),
            name: self.metadata.name.clone(),
            trust_domain: self.spec.trust_domain.clone(),
            roots: self.spec.roots.clone(),
        }
    }

    pub fn from_proto(message: &v1::TrustBundle, version: Option<u64>) -> TrustBundleDocument {
        TrustBundleDocument {
            kind: Kind::TrustBundle.as_str().to_owned(),
            metadata: Metadata {
                name: message.name.clone(),
                namespace: message.namespace.clone(),
                version,
                creation_timestamp: None,
            },
            spec: TrustBundleSpec {
                trust_domain: message.trust_domain.clone(),
                roots: message.roots.clone(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDocument {
    pub kind: String,
    pub metadata: Metadata,
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointsDocument {
    pub kind: String,
    pub metadata: Metadata,
    pub spec: EndpointsSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Printed by `get` (the store's version of the resource); ignored by `apply`, which
    /// accepts it so that `get -o yaml` output can be applied as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// When a route was first applied (RFC 3339), printed by `get`; ignored by
    /// `apply`, as `version` is: the control plane keeps the first one.
    #[serde(
        default,
        rename = "creationTimestamp",
        skip_serializing_if = "Option::is_none"
    )]
    pub creation_timestamp: Option<String>,
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_owned()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default, rename = "virtualIPs", skip_serializing_if = "Vec::is_empty")]
    pub virtual_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub load_balancer: String,
    /// STRICT | PERMISSIVE (default) | DISABLED.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mtls: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetriesSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetectionSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breakers: Option<CircuitBreakersSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<LocalityPolicySpec>,
    /// The active check each proxy of the service runs against its application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
    /// Access logs and tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetrySpec>,
}

/// `healthCheck:` one of `http`, `grpc` or `tcp`, and the timing; zero or absent
/// values take the defaults (see `model::HealthCheck`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheckSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheckSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcCheckSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheckSpec>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval_ms: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout_ms: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub healthy_threshold: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unhealthy_threshold: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpCheckSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expected_status: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct GrpcCheckSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
}

/// `tcp: {}`: nothing to configure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TcpCheckSpec {}

impl HealthCheckSpec {
    pub fn to_proto(&self) -> v1::HealthCheck {
        v1::HealthCheck {
            http: self.http.as_ref().map(|h| v1::HttpHealthCheck {
                path: h.path.clone(),
                expected_status: h.expected_status,
            }),
            grpc: self.grpc.as_ref().map(|g| v1::GrpcHealthCheck {
                service: g.service.clone(),
            }),
            tcp: self.tcp.as_ref().map(|_| v1::TcpHealthCheck {}),
            interval_ms: self.interval_ms,
            timeout_ms: self.timeout_ms,
            healthy_threshold: self.healthy_threshold,
            unhealthy_threshold: self.unhealthy_threshold,
        }
    }

    pub fn from_proto(message: &v1::HealthCheck) -> HealthCheckSpec {
        HealthCheckSpec {
            http: message.http.as_ref().map(|h| HttpCheckSpec {
                path: h.path.clone(),
                expected_status: h.expected_status,
            }),
            grpc: message.grpc.as_ref().map(|g| GrpcCheckSpec {
                service: g.service.clone(),
            }),
            tcp: message.tcp.as_ref().map(|_| TcpCheckSpec {}),
            interval_ms: message.interval_ms,
            timeout_ms: message.timeout_ms,
            healthy_threshold: message.healthy_threshold,
            unhealthy_threshold: message.unhealthy_threshold,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default)]
    pub protocol: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointsSpec {
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointSpec {
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub port_name: String,
    /// 0 (absent) means the server's default, 1.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<LocalitySpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub health: String,
    /// The workload's SPIFFE ID; set, it makes callers use mTLS to this endpoint.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identity: String,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalitySpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
}

/// Parses every document of `text`; empty documents (a trailing `---`) are skipped.
pub fn parse(text: &str) -> Result<Vec<Document>, ParseError> {
    let mut kinds = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let error = |message: String| ParseError::Document {
            document: i + 1,
            message,
        };
        let value = serde_yaml::Value::deserialize(document).map_err(|e| error(e.to_string()))?;
        if value.is_null() {
            kinds.push(None);
            continue;
        }
        let Some(mapping) = value.as_mapping() else {
            return Err(error(
                "expected a mapping with kind, metadata and spec".to_owned(),
            ));
        };
        let kind = match mapping.get("kind") {
            None => return Err(error("missing field `kind`".to_owned())),
            Some(serde_yaml::Value::String(text)) => Kind::parse(text)
                .filter(|k| k.as_str() == text)
                .ok_or_else(|| {
                    error(format!("unknown kind {text:?} (expected {})", kind_names()))
                })?,
            Some(_) => return Err(error(format!("kind must be a string: {}", kind_names()))),
        };
        kinds.push(Some(kind));
    }

    let mut documents = Vec::new();
    for (i, (document, kind)) in serde_yaml::Deserializer::from_str(text)
        .zip(kinds)
        .enumerate()
    {
        let error = |e: serde_yaml::Error| ParseError::Document {
            document: i + 1,
            message: e.to_string(),
        };
        match kind {
            None => {}
            Some(Kind::Service) => documents.push(Document::Service(
                ServiceDocument::deserialize(document).map_err(error)?,
            )),
            Some(Kind::Endpoints) => documents.push(Document::Endpoints(
                EndpointsDocument::deserialize(document).map_err(error)?,
            )),
            Some(Kind::TrustBundle) => documents.push(Document::TrustBundle(
                TrustBundleDocument::deserialize(document).map_err(error)?,
            )),
            Some(Kind::AuthorizationPolicy) => documents.push(Document::AuthorizationPolicy(
                AuthorizationPolicyDocument::deserialize(document).map_err(error)?,
            )),
            Some(Kind::HttpRoute) => documents.push(Document::HttpRoute(
                HttpRouteDocument::deserialize(document).map_err(error)?,
            )),
            Some(Kind::GrpcRoute) => documents.push(Document::GrpcRoute(
                GrpcRouteDocument::deserialize(document).map_err(error)?,
            )),
        }
    }
    if documents.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(documents)
}

fn kind_names() -> String {
    Kind::ALL.map(Kind::as_str).join(" or ")
}

/// Renders documents as a YAML stream that [`parse`] reads back.
pub fn to_yaml(documents: &[Document]) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for (i, document) in documents.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml::to_string(document)?);
    }
    Ok(out)
}

impl Document {
    pub fn kind(&self) -> Kind {
        match self {
            Document::Service(_) => Kind::Service,
            Document::Endpoints(_) => Kind::Endpoints,
            Document::TrustBundle(_) => Kind::TrustBundle,
            Document::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Document::HttpRoute(_) => Kind::HttpRoute,
            Document::GrpcRoute(_) => Kind::GrpcRoute,
        }
    }

    pub fn metadata(&self) -> &Metadata {
        match self {
            Document::Service(d) => &d.metadata,
            Document::Endpoints(d) => &d.metadata,
            Document::TrustBundle(d) => &d.metadata,
            Document::AuthorizationPolicy(d) => &d.metadata,
            Document::HttpRoute(d) => &d.metadata,
            Document::GrpcRoute(d) => &d.metadata,
        }
    }

    /// `<namespace>/<name>`, the resource's name in the API.
    pub fn name(&self) -> String {
        let metadata = self.metadata();
        format!("{}/{}", metadata.namespace, metadata.name)
    }

    /// The envelope sent in an Apply request; its version is left for the store.
    pub fn to_resource(&self) -> v1::Resource {
        let body = match self {
            Document::Service(d) => to_any(Kind::Service, &d.to_proto()),
            Document::Endpoints(d) => to_any(Kind::Endpoints, &d.to_proto()),
            Document::TrustBundle(d) => to_any(Kind::TrustBundle, &d.to_proto()),
            Document::AuthorizationPolicy(d) => to_any(Kind::AuthorizationPolicy, &d.to_proto()),
            Document::HttpRoute(d) => to_any(Kind::HttpRoute, &d.to_proto()),
            Document::GrpcRoute(d) => to_any(Kind::GrpcRoute, &d.to_proto()),
        };
        v1::Resource {
            name: self.name(),
            version: 0,
            body: Some(body),
        }
    }

    /// The document of a stored resource, for `get -o yaml|json`.
    pub fn from_resource(resource: &v1::Resource) -> Result<Document, String> {
        use prost::Message;

        let any = resource
            .body
            .as_ref()
            .ok_or_else(|| format!("resource {} has no body", resource.name))?;
        let kind = Kind::from_type_url(&any.type_url).ok_or_else(|| {
            format!(
                "resource {} has type {:?}, which this weftctl does not know",
                resource.name, any.type_url
            )
        })?;
        let malformed = |e: prost::DecodeError| format!("{kind} {}: {e}", resource.name);
        let version = Some(resource.version);
        Ok(match kind {
            Kind::Service => {
                let message = v1::Service::decode(any.value.as_slice()).map_err(malformed)?;
                Document::Service(ServiceDocument::from_proto(&message, version))
            }
            Kind::Endpoints => {
                let message = v1::Endpoints::decode(any.value.as_slice()).map_err(malformed)?;
                Document::Endpoints(EndpointsDocument::from_proto(&message, version))
            }
            Kind::TrustBundle => {
                let message = v1::TrustBundle::decode(any.value.as_slice()).map_err(malformed)?;
                Document::TrustBundle(TrustBundleDocument::from_proto(&message, version))
            }
            Kind::AuthorizationPolicy => {
                let message =
                    v1::AuthorizationPolicy::decode(any.value.as_slice()).map_err(malformed)?;
                Document::AuthorizationPolicy(AuthorizationPolicyDocument::from_proto(
                    &message, version,
                ))
            }
            Kind::HttpRoute => {
                let message = v1::HttpRoute::decode(any.value.as_slice()).map_err(malformed)?;
                Document::HttpRoute(HttpRouteDocument::from_proto(&message, version))
            }
            Kind::GrpcRoute => {
                let message = v1::GrpcRoute::decode(any.value.as_slice()).map_err(malformed)?;
                Document::GrpcRoute(GrpcRouteDocument::from_proto(&message, version))
            }
        })
    }
}

impl ServiceDocument {
    pub fn to_proto(&self) -> v1::Service {
        let mut message = v1::Service {
            namespace: self.metadata.namespace.clone(),
            name: self.metadata.name.clone(),
            ports: self
                .spec
                .ports
                .iter()
                .map(|p| v1::ServicePort {
                    name: p.name.clone(),
                    port: p.port,
                    protocol: p.protocol.clone(),
                })
                .collect(),
            virtual_ips: self.spec.virtual_ips.clone(),
            hostnames: self.spec.hostnames.clone(),
            ..v1::Service::default()
        };
        self.spec.policy().apply_to(&mut message);
        message
    }

    pub fn from_proto(message: &v1::Service, version: Option<u64>) -> ServiceDocument {
        let ports = message
            .ports
            .iter()
            .map(|p| PortSpec {
                name: p.name.clone(),
                port: p.port,
                protocol: p.protocol.clone(),
            })
            .collect();
        let mut spec = ServiceSpec {
            ports,
            virtual_ips: message.virtual_ips.clone(),
            hostnames: message.hostnames.clone(),
            ..ServiceSpec::default()
        };
        spec.set_policy(ServicePolicySpec::from_service(message));
        ServiceDocument {
            kind: Kind::Service.as_str().to_owned(),
            metadata: Metadata {
                name: message.name.clone(),
                namespace: message.namespace.clone(),
                version,
                creation_timestamp: None,
            },
            spec,
        }
    }
}

impl ServiceSpec {
    /// The policy fields alone: on Kubernetes, `apply` of a Service document becomes a
    /// ServicePolicy with this spec.
    pub fn policy(&self) -> ServicePolicySpec {
        ServicePolicySpec {
            load_balancer: self.load_balancer.clone(),
            mtls: self.mtls.clone(),
            timeouts: self.timeouts.clone(),
            retries: self.retries.clone(),
            outlier_detection: self.outlier_detection.clone(),
            circuit_breakers: self.circuit_breakers.clone(),
            locality: self.locality.clone(),
            health_check: self.health_check.clone(),
            telemetry: self.telemetry.clone(),
        }
    }

    /// Replaces every policy field, leaving ports, virtual IPs and hostnames.
    pub fn set_policy(&mut self, policy: ServicePolicySpec) {
        // Destructured so that a field added to the policy cannot be forgotten here.
        let ServicePolicySpec {
            load_balancer,
            mtls,
            timeouts,
            retries,
            outlier_detection,
            circuit_breakers,
            locality,
            health_check,
            telemetry,
        } = policy;
        self.load_balancer = load_balancer;
        self.mtls = mtls;
        self.timeouts = timeouts;
        self.retries = retries;
        self.outlier_detection = outlier_detection;
        self.circuit_breakers = circuit_breakers;
        self.locality = locality;
        self.health_check = health_check;
        self.telemetry = telemetry;
    }
}

impl EndpointsDocument {
    pub fn to_proto(&self) -> v1::Endpoints {
        v1::Endpoints {
            namespace: self.metadata.namespace.clone(),
            name: self.metadata.name.clone(),
            endpoints: self
                .spec
                .endpoints
                .iter()
                .map(|e| v1::Endpoint {
                    address: e.address.clone(),
                    port: e.port,
                    port_name: e.port_name.clone(),
                    weight: e.weight,
                    locality: e.locality.as_ref().map(|l| v1::Locality {
                        region: l.region.clone(),
                        zone: l.zone.clone(),
                    }),
                    labels: e
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    health: e.health.clone(),
                    identity: e.identity.clone(),
                })
                .collect(),
        }
    }

    pub fn from_proto(message: &v1::Endpoints, version: Option<u64>) -> EndpointsDocument {
        EndpointsDocument {
            kind: Kind::Endpoints.as_str().to_owned(),
            metadata: Metadata {
                name: message.name.clone(),
                namespace: message.namespace.clone(),
                version,
                creation_timestamp: None,
            },
            spec: EndpointsSpec {
                endpoints: message
                    .endpoints
                    .iter()
                    .map(|e| EndpointSpec {
                        address: e.address.clone(),
                        port: e.port,
                        port_name: e.port_name.clone(),
                        weight: e.weight,
                        // The store keeps an empty locality; printing `locality: {}` on
                        // every endpoint would only be noise.
                        locality: e
                            .locality
                            .as_ref()
                            .filter(|l| !l.region.is_empty() || !l.zone.is_empty())
                            .map(|l| LocalitySpec {
                                region: l.region.clone(),
                                zone: l.zone.clone(),
                            }),
                        labels: e
                            .labels
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                        health: e.health.clone(),
                        identity: e.identity.clone(),
                    })
                    .collect(),
            },
        }
    }
}
