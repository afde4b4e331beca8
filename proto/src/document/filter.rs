//! The filter, timeout and retry sections of route documents, mapped field for field
//! to their weft.v1 messages. Values are the server's to validate.

use serde::{Deserialize, Serialize};

use super::route::ServiceRefSpec;
use crate::v1;

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// One filter: `type` and the section it names.
/// ```yaml
/// filters:
/// - type: RequestHeaderModifier
///   requestHeaderModifier: {set: [{name: x-canary, value: "1"}], remove: [x-debug]}
/// - type: weft.io/Fault
///   fault: {abort: {httpStatus: 503, percent: 5}}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterSpec {
    /// RequestHeaderModifier, ResponseHeaderModifier, RequestMirror, RequestRedirect,
    /// URLRewrite, weft.io/Fault or weft.io/LocalRateLimit.
    #[serde(default)]
    pub r#type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifierSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifierSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirrorSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirectSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewriteSpec>,
    /// weft.io/Fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultSpec>,
    /// weft.io/LocalRateLimit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_rate_limit: Option<LocalRateLimitSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderModifierSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestMirrorSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<ServiceRefSpec>,
    /// 0-100 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestRedirectSpec {
    /// http | https (default: the request's).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scheme: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifierSpec>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port: u32,
    /// 301 | 302 (default) | 303 | 307 | 308.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub status_code: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UrlRewriteSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifierSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PathModifierSpec {
    /// ReplaceFullPath | ReplacePrefixMatch.
    #[serde(default)]
    pub r#type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

/// weft.io/Fault: `delay`, `abort`, or both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelaySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbortSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultDelaySpec {
    /// A Gateway API duration (`100ms`).
    #[serde(default)]
    pub fixed_delay: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultAbortSpec {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub http_status: u32,
    /// A gRPC status by name (UNAVAILABLE).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub grpc_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
}

/// weft.io/LocalRateLimit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalRateLimitSpec {
    #[serde(default)]
    pub requests_per_unit: u32,
    /// second | minute.
    #[serde(default)]
    pub unit: String,
    /// Default: requestsPerUnit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub burst: u32,
}

/// Gateway API durations; `0s` turns a timeout off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteTimeoutsSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub backend_request: String,
}

/// GEP-1731: `codes` are HTTP statuses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRetrySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub backoff: String,
}

/// As [`HttpRetrySpec`], with gRPC statuses by name as `codes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcRetrySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub backoff: String,
}

impl FilterSpec {
    pub fn to_proto(&self) -> v1::RouteFilter {
        v1::RouteFilter {
            r#type: self.r#type.clone(),
            request_header_modifier: self.request_header_modifier.as_ref().map(|m| m.to_proto()),
            response_header_modifier: self.response_header_modifier.as_ref().map(|m| m.to_proto()),
            request_mirror: self.request_mirror.as_ref().map(|m| v1::RequestMirror {
                backend_ref: m.backend_ref.as_ref().map(ServiceRefSpec::to_proto),
                percent: m.percent,
            }),
            request_redirect: self.request_redirect.as_ref().map(|r| v1::RequestRedirect {
                scheme: r.scheme.clone(),
                hostname: r.hostname.clone(),
                path: r.path.as_ref().map(PathModifierSpec::to_proto),
                port: r.port,
                status_code: r.status_code,
            }),
            url_rewrite: self.url_rewrite.as_ref().map(|r| v1::UrlRewrite {
                hostname: r.hostname.clone(),
                path: r.path.as_ref().map(PathModifierSpec::to_proto),
            }),
            fault: self.fault.as_ref().map(|f| v1::FaultFilter {
                delay: f.delay.as_ref().map(|d| v1::FaultDelay {
                    fixed_delay: d.fixed_delay.clone(),
                    percent: d.percent,
                }),
                abort: f.abort.as_ref().map(|a| v1::FaultAbort {
                    http_status: a.http_status,
                    grpc_status: a.grpc_status.clone(),
                    percent: a.percent,
                }),
            }),
            local_rate_limit: self
                .local_rate_limit
                .as_ref()
                .map(|l| v1::LocalRateLimitFilter {
                    requests_per_unit: l.requests_per_unit,
                    unit: l.unit.clone(),
                    burst: l.burst,
                }),
        }
    }

    pub fn from_proto(m: &v1::RouteFilter) -> FilterSpec {
        FilterSpec {
            r#type: m.r#type.clone(),
            request_header_modifier: m
                .request_header_modifier
                .as_ref()
                .map(HeaderModifierSpec::from_proto),
            response_header_modifier: m
                .response_header_modifier
                .as_ref()
                .map(HeaderModifierSpec::from_proto),
            request_mirror: m.request_mirror.as_ref().map(|m| RequestMirrorSpec {
                backend_ref: m.backend_ref.as_ref().map(ServiceRefSpec::from_proto),
                percent: m.percent,
            }),
            request_redirect: m.request_redirect.as_ref().map(|r| RequestRedirectSpec {
                scheme: r.scheme.clone(),
                hostname: r.hostname.clone(),
                path: r.path.as_ref().map(PathModifierSpec::from_proto),
                port: r.port,
                status_code: r.status_code,
            }),
            url_rewrite: m.url_rewrite.as_ref().map(|r| UrlRewriteSpec {
                hostname: r.hostname.clone(),
                path: r.path.as_ref().map(PathModifierSpec::from_proto),
            }),
            fault: m.fault.as_ref().map(|f| FaultSpec {
                delay: f.delay.as_ref().map(|d| FaultDelaySpec {
                    fixed_delay: d.fixed_delay.clone(),
                    percent: d.percent,
                }),
                abort: f.abort.as_ref().map(|a| FaultAbortSpec {
                    http_status: a.http_status,
                    grpc_status: a.grpc_status.clone(),
                    percent: a.percent,
                }),
            }),
            local_rate_limit: m.local_rate_limit.as_ref().map(|l| LocalRateLimitSpec {
                requests_per_unit: l.requests_per_unit,
                unit: l.unit.clone(),
                burst: l.burst,
            }),
        }
    }
}

impl HeaderModifierSpec {
    fn to_proto(&self) -> v1::HeaderModifier {
        let headers = |list: &[HeaderSpec]| {
            list.iter()
                .map(|h| v1::Header {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect()
        };
        v1::HeaderModifier {
            set: headers(&self.set),
            add: headers(&self.add),
            remove: self.remove.clone(),
        }
    }

    fn from_proto(m: &v1::HeaderModifier) -> HeaderModifierSpec {
        let headers = |list: &[v1::Header]| {
            list.iter()
                .map(|h| HeaderSpec {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect()
        };
        HeaderModifierSpec {
            set: headers(&m.set),
            add: headers(&m.add),
            remove: m.remove.clone(),
        }
    }
}

impl PathModifierSpec {
    fn to_proto(&self) -> v1::PathModifier {
        v1::PathModifier {
            r#type: self.r#type.clone(),
            replace_full_path: self.replace_full_path.clone(),
            replace_prefix_match: self.replace_prefix_match.clone(),
        }
    }

    fn from_proto(m: &v1::PathModifier) -> PathModifierSpec {
        PathModifierSpec {
            r#type: m.r#type.clone(),
            replace_full_path: m.replace_full_path.clone(),
            replace_prefix_match: m.replace_prefix_match.clone(),
        }
    }
}

impl RouteTimeoutsSpec {
    pub fn to_proto(&self) -> v1::RouteTimeouts {
        v1::RouteTimeouts {
            request: self.request.clone(),
            backend_request: self.backend_request.clone(),
        }
    }

    pub fn from_proto(m: &v1::RouteTimeouts) -> RouteTimeoutsSpec {
        RouteTimeoutsSpec {
            request: m.request.clone(),
            backend_request: m.backend_request.clone(),
        }
    }
}

impl HttpRetrySpec {
    pub fn to_proto(&self) -> v1::HttpRouteRetry {
        v1::HttpRouteRetry {
            codes: self.codes.clone(),
            attempts: self.attempts,
            backoff: self.backoff.clone(),
        }
    }

    pub fn from_proto(m: &v1::HttpRouteRetry) -> HttpRetrySpec {
        HttpRetrySpec {
            codes: m.codes.clone(),
            attempts: m.attempts,
            backoff: m.backoff.clone(),
        }
    }
}

impl GrpcRetrySpec {
    pub fn to_proto(&self) -> v1::GrpcRouteRetry {
        v1::GrpcRouteRetry {
            codes: self.codes.clone(),
            attempts: self.attempts,
            backoff: self.backoff.clone(),
        }
    }

    pub fn from_proto(m: &v1::GrpcRouteRetry) -> GrpcRetrySpec {
        GrpcRetrySpec {
            codes: m.codes.clone(),
            attempts: m.attempts,
            backoff: m.backoff.clone(),
        }
    }
}
