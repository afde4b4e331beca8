//! HTTPRoute and GRPCRoute documents: the Gateway API's shapes and field names, so
//! that a route written for Istio or Linkerd (GAMMA) reads the same here.
//!
//! What Weft does not support is refused by name rather than ignored: an unknown
//! field (`sectionName`, `sessionPersistence`, a CORS filter) fails the parse, an
//! unsupported value (`kind: Gateway`, `type: ExtensionRef`) fails validation.
//! Weft's extensions: the `weft.io/Fault` and `weft.io/LocalRateLimit` filters, and
//! `timeouts` and `retry` on GRPCRoute rules.

use serde::{Deserialize, Serialize};

use super::filter::{FilterSpec, GrpcRetrySpec, HttpRetrySpec, RouteTimeoutsSpec};
use super::Metadata;
use crate::resource::Kind;
use crate::v1;

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// Routes requests sent to a service:
/// ```yaml
/// kind: HTTPRoute
/// metadata: {name: orders-canary, namespace: shop}
/// spec:
///   parentRefs: [{name: orders, port: 80}]   # kind Service (the default), group core
///   rules:
///   - matches: [{headers: [{name: x-canary, value: "1"}]}]
///     backendRefs: [{name: orders-v2}]
///   - backendRefs:                             # everything else: a 90/10 split
///     - {name: orders-v1, weight: 90}
///     - {name: orders-v2, weight: 10}
///     timeouts: {request: 2s}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRouteDocument {
    pub kind: String,
    pub metadata: Metadata,
    pub spec: HttpRouteSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ServiceRefSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Vec<HttpRuleSpec>,
}

/// A service: a route's parent, or where a mirror sends its copies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRefSpec {
    /// "" or core.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Service (the default).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Default: the route's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    /// A parent's port: the route applies to that port only (default: every port).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendRefSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    /// Default: the port the request was sent to.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port: u32,
    /// Default 1; 0 drains the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRuleSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Default: every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatchSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<FilterSpec>,
    /// Default: the parent service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRefSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RouteTimeoutsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<HttpRetrySpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpMatchSpec {
    /// Default: PathPrefix `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatchSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatchSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<ValueMatchSpec>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathMatchSpec {
    /// Exact | PathPrefix (default) | RegularExpression.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub r#type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// A header or query parameter condition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMatchSpec {
    /// Exact (default) | RegularExpression.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub r#type: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// Routes gRPC calls sent to a service:
/// ```yaml
/// kind: GRPCRoute
/// metadata: {name: payments, namespace: shop}
/// spec:
///   parentRefs: [{name: payments}]
///   rules:
///   - matches: [{method: {service: shop.Payments, method: Refund}}]
///     backendRefs: [{name: payments-v2}]
///   - backendRefs: [{name: payments}]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcRouteDocument {
    pub kind: String,
    pub metadata: Metadata,
    pub spec: GrpcRouteSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ServiceRefSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Vec<GrpcRuleSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcRuleSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<GrpcMatchSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<FilterSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRefSpec>,
    /// Weft's extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RouteTimeoutsSpec>,
    /// Weft's extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<GrpcRetrySpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcMatchSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GrpcMethodSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatchSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcMethodSpec {
    /// Exact (default) | RegularExpression.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub r#type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
}

impl ServiceRefSpec {
    pub fn to_proto(&self) -> v1::ServiceRef {
        v1::ServiceRef {
            group: self.group.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            port: self.port,
        }
    }

    pub fn from_proto(m: &v1::ServiceRef) -> ServiceRefSpec {
        ServiceRefSpec {
            group: m.group.clone(),
            kind: m.kind.clone(),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            port: m.port,
        }
    }
}

impl BackendRefSpec {
    fn to_proto(&self) -> v1::BackendRef {
        v1::BackendRef {
            group: self.group.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            port: self.port,
            weight: self.weight,
        }
    }

    fn from_proto(m: &v1::BackendRef) -> BackendRefSpec {
        BackendRefSpec {
            group: m.group.clone(),
            kind: m.kind.clone(),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            port: m.port,
            weight: m.weight,
        }
    }
}

impl ValueMatchSpec {
    fn to_proto(&self) -> v1::ValueMatch {
        v1::ValueMatch {
            r#type: self.r#type.clone(),
            name: self.name.clone(),
            value: self.value.clone(),
        }
    }

    fn from_proto(m: &v1::ValueMatch) -> ValueMatchSpec {
        ValueMatchSpec {
            r#type: m.r#type.clone(),
            name: m.name.clone(),
            value: m.value.clone(),
        }
    }
}

fn map<A, B>(list: &[A], f: impl Fn(&A) -> B) -> Vec<B> {
    list.iter().map(f).collect()
}

/// The metadata of a stored route: its version and, when known, when it was made.
fn route_metadata(namespace: &str, name: &str, version: Option<u64>, created_ms: u64) -> Metadata {
    Metadata {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        version,
        creation_timestamp: (created_ms != 0).then(|| rfc3339(created_ms)),
    }
}

impl HttpRouteDocument {
    pub fn to_proto(&self) -> v1::HttpRoute {
        v1::HttpRoute {
            namespace: self.metadata.namespace.clone(),
            name: self.metadata.name.clone(),
            parent_refs: map(&self.spec.parent_refs, ServiceRefSpec::to_proto),
            hostnames: self.spec.hostnames.clone(),
            rules: map(&self.spec.rules, |r| v1::HttpRouteRule {
                name: r.name.clone(),
                matches: map(&r.matches, |m| v1::HttpRouteMatch {
                    path: m.path.as_ref().map(|p| v1::HttpPathMatch {
                        r#type: p.r#type.clone(),
                        value: p.value.clone(),
                    }),
                    headers: map(&m.headers, ValueMatchSpec::to_proto),
                    query_params: map(&m.query_params, ValueMatchSpec::to_proto),
                    method: m.method.clone(),
                }),
                filters: map(&r.filters, FilterSpec::to_proto),
                backend_refs: map(&r.backend_refs, BackendRefSpec::to_proto),
                timeouts: r.timeouts.as_ref().map(RouteTimeoutsSpec::to_proto),
                retry: r.retry.as_ref().map(HttpRetrySpec::to_proto),
            }),
            // The control plane keeps a route's first creation time; a document's
            // is only shown.
            creation_timestamp_ms: 0,
        }
    }

    pub fn from_proto(m: &v1::HttpRoute, version: Option<u64>) -> HttpRouteDocument {
        HttpRouteDocument {
            kind: Kind::HttpRoute.as_str().to_owned(),
            metadata: route_metadata(&m.namespace, &m.name, version, m.creation_timestamp_ms),
            spec: HttpRouteSpec {
                parent_refs: map(&m.parent_refs, ServiceRefSpec::from_proto),
                hostnames: m.hostnames.clone(),
                rules: map(&m.rules, |r| HttpRuleSpec {
                    name: r.name.clone(),
                    matches: map(&r.matches, |m| HttpMatchSpec {
                        path: m.path.as_ref().map(|p| PathMatchSpec {
                            r#type: p.r#type.clone(),
                            value: p.value.clone(),
                        }),
                        headers: map(&m.headers, ValueMatchSpec::from_proto),
                        query_params: map(&m.query_params, ValueMatchSpec::from_proto),
                        method: m.method.clone(),
                    }),
                    filters: map(&r.filters, FilterSpec::from_proto),
                    backend_refs: map(&r.backend_refs, BackendRefSpec::from_proto),
                    timeouts: r.timeouts.as_ref().map(RouteTimeoutsSpec::from_proto),
                    retry: r.retry.as_ref().map(HttpRetrySpec::from_proto),
                }),
            },
        }
    }
}

impl GrpcRouteDocument {
    pub fn to_proto(&self) -> v1::GrpcRoute {
        v1::GrpcRoute {
            namespace: self.metadata.namespace.clone(),
            name: self.metadata.name.clone(),
            parent_refs: map(&self.spec.parent_refs, ServiceRefSpec::to_proto),
            hostnames: self.spec.hostnames.clone(),
            rules: map(&self.spec.rules, |r| v1::GrpcRouteRule {
                name: r.name.clone(),
                matches: map(&r.matches, |m| v1::GrpcRouteMatch {
                    method: m.method.as_ref().map(|m| v1::GrpcMethodMatch {
                        r#type: m.r#type.clone(),
                        service: m.service.clone(),
                        method: m.method.clone(),
                    }),
                    headers: map(&m.headers, ValueMatchSpec::to_proto),
                }),
                filters: map(&r.filters, FilterSpec::to_proto),
                backend_refs: map(&r.backend_refs, BackendRefSpec::to_proto),
                timeouts: r.timeouts.as_ref().map(RouteTimeoutsSpec::to_proto),
                retry: r.retry.as_ref().map(GrpcRetrySpec::to_proto),
            }),
            creation_timestamp_ms: 0,
        }
    }

    pub fn from_proto(m: &v1::GrpcRoute, version: Option<u64>) -> GrpcRouteDocument {
        GrpcRouteDocument {
            kind: Kind::GrpcRoute.as_str().to_owned(),
            metadata: route_metadata(&m.namespace, &m.name, version, m.creation_timestamp_ms),
            spec: GrpcRouteSpec {
                parent_refs: map(&m.parent_refs, ServiceRefSpec::from_proto),
                hostnames: m.hostnames.clone(),
                rules: map(&m.rules, |r| GrpcRuleSpec {
                    name: r.name.clone(),
                    matches: map(&r.matches, |m| GrpcMatchSpec {
                        method: m.method.as_ref().map(|m| GrpcMethodSpec {
                            r#type: m.r#type.clone(),
                            service: m.service.clone(),
                            method: m.method.clone(),
                        }),
                        headers: map(&m.headers, ValueMatchSpec::from_proto),
                    }),
                    filters: map(&r.filters, FilterSpec::from_proto),
                    backend_refs: map(&r.backend_refs, BackendRefSpec::from_proto),
                    timeouts: r.timeouts.as_ref().map(RouteTimeoutsSpec::from_proto),
                    retry: r.retry.as_ref().map(GrpcRetrySpec::from_proto),
                }),
            },
        }
    }
}

/// Milliseconds since the Unix epoch as Kubernetes prints a creationTimestamp
/// (RFC 3339, UTC, to the second).
pub fn rfc3339(ms: u64) -> String {
    let seconds = ms / 1000;
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    // Days to a civil date, after Howard Hinnant's `civil_from_days`.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn timestamps_print_as_kubernetes_does() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_999), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_107_542_400_000), "2100-03-01T00:00:00Z");
    }
}
