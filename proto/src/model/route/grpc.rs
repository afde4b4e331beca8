//! GRPCRoute: rules that select gRPC calls by service, method and headers, and say
//! where they go.

use http::HeaderMap;

use super::common::{self, at_most, route_message, Route};
use super::filter::{Filter, RouteKind};
use super::grpc_code::GrpcCode;
use super::pattern::Pattern;
use super::refs::BackendRef;
use super::resilience::{RouteRetry, RouteTimeouts};
use super::value_match::{header_matches, HeaderMatch};
use crate::model::Invalid;
use crate::v1;

/// The Gateway API's limit on one GRPCRoute rule's matches.
const MAX_RULE_MATCHES: usize = 8;
const MAX_NAME: usize = 1024;

pub type GrpcRoute = Route<GrpcRule>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcRule {
    pub name: Option<String>,
    /// Any one selects the rule; at least one (written without matches: every call).
    pub matches: Vec<GrpcMatch>,
    /// No RequestRedirect or URLRewrite: the Gateway API has none for gRPC.
    pub filters: Vec<Filter>,
    /// Empty: the parent service itself.
    pub backends: Vec<BackendRef>,
    /// Weft's extension: the Gateway API has rule timeouts on HTTPRoute only.
    pub timeouts: RouteTimeouts,
    /// Weft's extension, with gRPC statuses as the codes.
    pub retry: Option<RouteRetry<GrpcCode>>,
}

/// Every condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrpcMatch {
    /// `None`: every service and method.
    pub method: Option<MethodMatch>,
    pub headers: Vec<HeaderMatch>,
}

/// The service and method of a call; at least one of them is set (`None`: any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodMatch {
    Exact {
        service: Option<String>,
        method: Option<String>,
    },
    RegularExpression {
        service: Option<Pattern>,
        method: Option<Pattern>,
    },
}

/// What route matching reads of a gRPC call; nothing is copied.
#[derive(Debug, Clone, Copy)]
pub struct GrpcRequest<'a> {
    /// `package.Service`.
    pub service: &'a str,
    pub method: &'a str,
    pub authority: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

impl<'a> GrpcRequest<'a> {
    /// Reads the service and method from a gRPC path (`/package.Service/Method`);
    /// `None` when the path is not one.
    pub fn from_path(
        path: &'a str,
        authority: Option<&'a str>,
        headers: &'a HeaderMap,
    ) -> Option<GrpcRequest<'a>> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        if service.is_empty() || method.is_empty() || method.contains('/') {
            return None;
        }
        Some(GrpcRequest {
            service,
            method,
            authority,
            headers,
        })
    }
}

impl MethodMatch {
    pub fn matches(&self, service: &str, method: &str) -> bool {
        match self {
            MethodMatch::Exact {
                service: s,
                method: m,
            } => {
                s.as_deref().is_none_or(|s| s == service)
                    && m.as_deref().is_none_or(|m| m == method)
            }
            MethodMatch::RegularExpression {
                service: s,
                method: m,
            } => {
                s.as_ref().is_none_or(|s| s.matches(service))
                    && m.as_ref().is_none_or(|m| m.matches(method))
            }
        }
    }

    fn from_proto(msg: &v1::GrpcMethodMatch) -> Result<MethodMatch, Invalid> {
        if msg.service.is_empty() && msg.method.is_empty() {
            return Err(Invalid::new("", "needs a service, a method, or both"));
        }
        for (field, value) in [("service", &msg.service), ("method", &msg.method)] {
            if value.len() > MAX_NAME {
                return Err(Invalid::new(
                    field,
                    format!("longer than {MAX_NAME} characters"),
                ));
            }
        }
        let some = |text: &str| (!text.is_empty()).then(|| text.to_owned());
        match msg.r#type.as_str() {
            "" | "Exact" => {
                if !msg.service.is_empty() && !is_service_name(&msg.service) {
                    return Err(Invalid::new(
                        "service",
                        format!(
                            "{:?} is not a gRPC service name (package.Service)",
                            msg.service
                        ),
                    ));
                }
                if !msg.method.is_empty() && !is_identifier(&msg.method) {
                    return Err(Invalid::new(
                        "method",
                        format!("{:?} is not a gRPC method name", msg.method),
                    ));
                }
                Ok(MethodMatch::Exact {
                    service: some(&msg.service),
                    method: some(&msg.method),
                })
            }
            "RegularExpression" => {
                let pattern = |field: &str, text: &str| {
                    (!text.is_empty())
                        .then(|| Pattern::new(field, text))
                        .transpose()
                };
                Ok(MethodMatch::RegularExpression {
                    service: pattern("service", &msg.service)?,
                    method: pattern("method", &msg.method)?,
                })
            }
            other => Err(Invalid::new(
                "type",
                format!("{other:?} is not Exact or RegularExpression"),
            )),
        }
    }

    fn to_proto(&self) -> v1::GrpcMethodMatch {
        match self {
            MethodMatch::Exact { service, method } => v1::GrpcMethodMatch {
                r#type: "Exact".to_owned(),
                service: service.clone().unwrap_or_default(),
                method: method.clone().unwrap_or_default(),
            },
            MethodMatch::RegularExpression { service, method } => v1::GrpcMethodMatch {
                r#type: "RegularExpression".to_owned(),
                service: service
                    .as_ref()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default(),
                method: method
                    .as_ref()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default(),
            },
        }
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
fn is_identifier(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Dot-separated identifiers, optionally with a leading dot (the Gateway API's
/// `^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$`).
fn is_service_name(text: &str) -> bool {
    text.strip_prefix('.')
        .unwrap_or(text)
        .split('.')
        .all(is_identifier)
}

impl GrpcMatch {
    pub fn matches(&self, request: &GrpcRequest<'_>) -> bool {
        self.method
            .as_ref()
            .is_none_or(|m| m.matches(request.service, request.method))
            && self.headers.iter().all(|h| h.matches(request.headers))
    }

    fn from_proto(msg: &v1::GrpcRouteMatch) -> Result<GrpcMatch, Invalid> {
        let method = msg
            .method
            .as_ref()
            .map(MethodMatch::from_proto)
            .transpose()
            .map_err(|e| e.within("method"))?;
        let headers = header_matches(&msg.headers)?;
        Ok(GrpcMatch { method, headers })
    }

    fn to_proto(&self) -> v1::GrpcRouteMatch {
        v1::GrpcRouteMatch {
            method: self.method.as_ref().map(MethodMatch::to_proto),
            headers: self.headers.iter().map(HeaderMatch::to_proto).collect(),
        }
    }
}

impl GrpcRule {
    fn from_proto(
        msg: &v1::GrpcRouteRule,
        namespace: &str,
        earlier: &[Option<String>],
    ) -> Result<GrpcRule, Invalid> {
        let name = common::rule_name(&msg.name, earlier)?;
        at_most("matches", msg.matches.len(), MAX_RULE_MATCHES)?;
        let mut matches = Vec::with_capacity(msg.matches.len().max(1));
        for (i, m) in msg.matches.iter().enumerate() {
            matches.push(GrpcMatch::from_proto(m).map_err(|e| e.within(format!("matches[{i}]")))?);
        }
        if matches.is_empty() {
            matches.push(GrpcMatch::default());
        }
        let timeouts = RouteTimeouts::from_rule(msg.timeouts.as_ref())?;
        let retry = msg
            .retry
            .as_ref()
            .map(RouteRetry::<GrpcCode>::from_proto)
            .transpose()
            .map_err(|e| e.within("retry"))?;
        Ok(GrpcRule {
            name,
            matches,
            filters: common::filters(&msg.filters, RouteKind::Grpc, namespace)?,
            backends: common::backends(&msg.backend_refs, namespace)?,
            timeouts,
            retry,
        })
    }

    fn to_proto(&self) -> v1::GrpcRouteRule {
        v1::GrpcRouteRule {
            name: self.name.clone().unwrap_or_default(),
            matches: common::matches_to_proto(&self.matches, GrpcMatch::to_proto),
            filters: self.filters.iter().map(Filter::to_proto).collect(),
            backend_refs: self.backends.iter().map(BackendRef::to_proto).collect(),
            timeouts: self.timeouts.to_proto(),
            retry: self.retry.as_ref().map(RouteRetry::<GrpcCode>::to_proto),
        }
    }
}

impl GrpcRoute {
    pub fn to_proto(&self) -> v1::GrpcRoute {
        let (parent_refs, hostnames) = self.proto_refs();
        v1::GrpcRoute {
            namespace: self.name.namespace.clone(),
            name: self.name.name.clone(),
            parent_refs,
            hostnames,
            rules: self.rules.iter().map(GrpcRule::to_proto).collect(),
            creation_timestamp_ms: self.creation_timestamp_ms,
        }
    }
}

impl TryFrom<&v1::GrpcRoute> for GrpcRoute {
    type Error = Invalid;

    fn try_from(msg: &v1::GrpcRoute) -> Result<GrpcRoute, Invalid> {
        Route::from_message(
            route_message!(msg),
            |rule| rule.matches.len(),
            |rule, earlier| GrpcRule::from_proto(rule, &msg.namespace, earlier),
            |rule| rule.name.clone(),
        )
    }
}
