//! A rule's filters: what happens to the requests it selects besides forwarding.
//!
//! The Gateway API's filters (header modifiers, mirror, redirect, URL rewrite) and
//! Weft's own, written with a type of their own rather than through `ExtensionRef`
//! (which would need a second object to point at): `weft.io/Fault` delays or aborts a
//! share of the requests, as Istio's fault injection does, and
//! `weft.io/LocalRateLimit` answers 429 (`RESOURCE_EXHAUSTED`) beyond a token bucket
//! kept by each proxy for each rule. Filters run in the order they are written.

use http::{HeaderName, HeaderValue};

use super::refs::{service_ref, to_service_ref};
use crate::model::{Invalid, ResourceName};
use crate::v1;

mod rewrite;
mod weft;

pub use rewrite::{PathModifier, RedirectFrom, RequestRedirect, Scheme, UrlRewrite};
pub use weft::{AbortStatus, Fault, FaultAbort, FaultDelay, LocalRateLimit, RateUnit};

/// The Gateway API's limit on the entries of a header modifier's lists.
const MAX_HEADERS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    RequestHeaderModifier(HeaderModifier),
    ResponseHeaderModifier(HeaderModifier),
    RequestMirror(RequestMirror),
    /// HTTPRoute only.
    RequestRedirect(RequestRedirect),
    /// HTTPRoute only.
    UrlRewrite(UrlRewrite),
    Fault(Fault),
    LocalRateLimit(LocalRateLimit),
}

/// The filter types, as `type` names them.
pub const REQUEST_HEADER_MODIFIER: &str = "RequestHeaderModifier";
pub const RESPONSE_HEADER_MODIFIER: &str = "ResponseHeaderModifier";
pub const REQUEST_MIRROR: &str = "RequestMirror";
pub const REQUEST_REDIRECT: &str = "RequestRedirect";
pub const URL_REWRITE: &str = "URLRewrite";
pub const FAULT: &str = "weft.io/Fault";
pub const LOCAL_RATE_LIMIT: &str = "weft.io/LocalRateLimit";

/// Headers a modifier may not touch: those that frame the message or belong to one
/// connection (a changed `content-length` would let the next hop read the body
/// apart from this one), and `host`, which URLRewrite's `hostname` sets (Envoy
/// refuses these the same way).
const UNMODIFIABLE: [&str; 9] = [
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Sets, adds and removes headers. Names are lower case (as HTTP/2 sends them); each
/// name appears once across the three lists, and none is one of [`UNMODIFIABLE`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderModifier {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

/// Sends a copy of a share of the requests to another service and drops its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMirror {
    pub service: ResourceName,
    pub port: Option<u16>,
    /// 0-100.
    pub percent: u32,
}

/// Which route kind a filter belongs to: GRPCRoute has no redirect or rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Http,
    Grpc,
}

impl Filter {
    pub fn type_name(&self) -> &'static str {
        match self {
            Filter::RequestHeaderModifier(_) => REQUEST_HEADER_MODIFIER,
            Filter::ResponseHeaderModifier(_) => RESPONSE_HEADER_MODIFIER,
            Filter::RequestMirror(_) => REQUEST_MIRROR,
            Filter::RequestRedirect(_) => REQUEST_REDIRECT,
            Filter::UrlRewrite(_) => URL_REWRITE,
            Filter::Fault(_) => FAULT,
            Filter::LocalRateLimit(_) => LOCAL_RATE_LIMIT,
        }
    }

    /// Converts one filter; errors name fields below the filter (`type`,
    /// `requestMirror.percent`).
    pub fn from_proto(
        msg: &v1::RouteFilter,
        route: RouteKind,
        namespace: &str,
    ) -> Result<Filter, Invalid> {
        let supported: &[&str] = match route {
            RouteKind::Http => &[
                REQUEST_HEADER_MODIFIER,
                RESPONSE_HEADER_MODIFIER,
                REQUEST_MIRROR,
                REQUEST_REDIRECT,
                URL_REWRITE,
                FAULT,
                LOCAL_RATE_LIMIT,
            ],
            RouteKind::Grpc => &[
                REQUEST_HEADER_MODIFIER,
                RESPONSE_HEADER_MODIFIER,
                REQUEST_MIRROR,
                FAULT,
                LOCAL_RATE_LIMIT,
            ],
        };
        let kind = msg.r#type.as_str();
        if !supported.contains(&kind) {
            let hint = match kind {
                "ExtensionRef" => " (Weft's own filters are written with their type: weft.io/Fault, weft.io/LocalRateLimit)",
                _ => "",
            };
            return Err(Invalid::new(
                "type",
                format!(
                    "{kind:?} is not supported here (supported: {}){hint}",
                    supported.join(", ")
                ),
            ));
        }
        // The field the type names must be set, and no other: a second one would be
        // a setting silently ignored.
        let set: [(&str, &str, bool); 7] = [
            (
                REQUEST_HEADER_MODIFIER,
                "requestHeaderModifier",
                msg.request_header_modifier.is_some(),
            ),
            (
                RESPONSE_HEADER_MODIFIER,
                "responseHeaderModifier",
                msg.response_header_modifier.is_some(),
            ),
            (
                REQUEST_MIRROR,
                "requestMirror",
                msg.request_mirror.is_some(),
            ),
            (
                REQUEST_REDIRECT,
                "requestRedirect",
                msg.request_redirect.is_some(),
            ),
            (URL_REWRITE, "urlRewrite", msg.url_rewrite.is_some()),
            (FAULT, "fault", msg.fault.is_some()),
            (
                LOCAL_RATE_LIMIT,
                "localRateLimit",
                msg.local_rate_limit.is_some(),
            ),
        ];
        for (name, field, present) in set {
            if name == kind && !present {
                return Err(Invalid::new(field, format!("must be set for type {kind}")));
            }
            if name != kind && present {
                return Err(Invalid::new(
                    field,
                    format!("must not be set for type {kind}"),
                ));
            }
        }
        let filter = match kind {
            REQUEST_HEADER_MODIFIER => Filter::RequestHeaderModifier(
                HeaderModifier::from_proto(msg.request_header_modifier.as_ref())
                    .map_err(|e| e.within("requestHeaderModifier"))?,
            ),
            RESPONSE_HEADER_MODIFIER => Filter::ResponseHeaderModifier(
                HeaderModifier::from_proto(msg.response_header_modifier.as_ref())
                    .map_err(|e| e.within("responseHeaderModifier"))?,
            ),
            REQUEST_MIRROR => Filter::RequestMirror(
                RequestMirror::from_proto(msg.request_mirror.as_ref(), namespace)
                    .map_err(|e| e.within("requestMirror"))?,
            ),
            REQUEST_REDIRECT => Filter::RequestRedirect(
                RequestRedirect::from_proto(msg.request_redirect.as_ref())
                    .map_err(|e| e.within("requestRedirect"))?,
            ),
            URL_REWRITE => Filter::UrlRewrite(
                UrlRewrite::from_proto(msg.url_rewrite.as_ref())
                    .map_err(|e| e.within("urlRewrite"))?,
            ),
            FAULT => {
                Filter::Fault(Fault::from_proto(msg.fault.as_ref()).map_err(|e| e.within("fault"))?)
            }
            _ => Filter::LocalRateLimit(
                LocalRateLimit::from_proto(msg.local_rate_limit.as_ref())
                    .map_err(|e| e.within("localRateLimit"))?,
            ),
        };
        Ok(filter)
    }

    pub fn to_proto(&self) -> v1::RouteFilter {
        let mut msg = v1::RouteFilter {
            r#type: self.type_name().to_owned(),
            ..Default::default()
        };
        match self {
            Filter::RequestHeaderModifier(m) => msg.request_header_modifier = Some(m.to_proto()),
            Filter::ResponseHeaderModifier(m) => msg.response_header_modifier = Some(m.to_proto()),
            Filter::RequestMirror(m) => msg.request_mirror = Some(m.to_proto()),
            Filter::RequestRedirect(r) => msg.request_redirect = Some(r.to_proto()),
            Filter::UrlRewrite(r) => msg.url_rewrite = Some(r.to_proto()),
            Filter::Fault(f) => msg.fault = Some(f.to_proto()),
            Filter::LocalRateLimit(l) => msg.local_rate_limit = Some(l.to_proto()),
        }
        msg
    }

    /// The path modifier of a redirect or rewrite, which constrains the rule's matches.
    pub fn path_modifier(&self) -> Option<&PathModifier> {
        match self {
            Filter::RequestRedirect(r) => r.path.as_ref(),
            Filter::UrlRewrite(r) => r.path.as_ref(),
            _ => None,
        }
    }
}

pub(super) fn percent(field: &str, value: Option<u32>) -> Result<u32, Invalid> {
    match value.unwrap_or(100) {
        value @ 0..=100 => Ok(value),
        value => Err(Invalid::new(
            field,
            format!("{value} is not a percentage (0-100)"),
        )),
    }
}

fn header_name(field: &str, name: &str) -> Result<HeaderName, Invalid> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| Invalid::new(field, format!("{name:?} is not an HTTP header name")))
}

fn header_value(field: &str, value: &str) -> Result<HeaderValue, Invalid> {
    HeaderValue::from_str(value)
        .map_err(|_| Invalid::new(field, format!("{value:?} is not an HTTP header value")))
}

impl HeaderModifier {
    fn from_proto(msg: Option<&v1::HeaderModifier>) -> Result<HeaderModifier, Invalid> {
        let msg = msg.cloned().unwrap_or_default();
        let mut seen: Vec<HeaderName> = Vec::new();
        let mut once = |field: String, name: &HeaderName| {
            if UNMODIFIABLE.contains(&name.as_str()) {
                return Err(Invalid::new(
                    field,
                    format!("header {name} frames the message or its connection, or is the host (URLRewrite sets that), and cannot be modified"),
                ));
            }
            if seen.contains(name) {
                return Err(Invalid::new(
                    field,
                    format!("header {name} appears more than once (one action per header)"),
                ));
            }
            seen.push(name.clone());
            Ok(())
        };
        let mut pairs = |list: &str, headers: &[v1::Header]| {
            if headers.len() > MAX_HEADERS {
                return Err(Invalid::new(
                    list,
                    format!("more than {MAX_HEADERS} entries"),
                ));
            }
            let mut out = Vec::with_capacity(headers.len());
            for (i, header) in headers.iter().enumerate() {
                let name = header_name(&format!("{list}[{i}].name"), &header.name)?;
                once(format!("{list}[{i}].name"), &name)?;
                let value = header_value(&format!("{list}[{i}].value"), &header.value)?;
                out.push((name, value));
            }
            Ok(out)
        };
        let set = pairs("set", &msg.set)?;
        let add = pairs("add", &msg.add)?;
        if msg.remove.len() > MAX_HEADERS {
            return Err(Invalid::new(
                "remove",
                format!("more than {MAX_HEADERS} entries"),
            ));
        }
        let mut remove = Vec::with_capacity(msg.remove.len());
        for (i, name) in msg.remove.iter().enumerate() {
            let name = header_name(&format!("remove[{i}]"), name)?;
            once(format!("remove[{i}]"), &name)?;
            remove.push(name);
        }
        Ok(HeaderModifier { set, add, remove })
    }

    fn to_proto(&self) -> v1::HeaderModifier {
        let pairs = |list: &[(HeaderName, HeaderValue)]| {
            list.iter()
                .map(|(name, value)| v1::Header {
                    name: name.as_str().to_owned(),
                    // Validated from a string, so it is one.
                    value: value.to_str().unwrap_or_default().to_owned(),
                })
                .collect()
        };
        v1::HeaderModifier {
            set: pairs(&self.set),
            add: pairs(&self.add),
            remove: self.remove.iter().map(|n| n.as_str().to_owned()).collect(),
        }
    }
}

impl RequestMirror {
    fn from_proto(
        msg: Option<&v1::RequestMirror>,
        namespace: &str,
    ) -> Result<RequestMirror, Invalid> {
        let msg = msg.cloned().unwrap_or_default();
        let Some(backend) = &msg.backend_ref else {
            return Err(Invalid::new(
                "backendRef",
                "must name the service to mirror to",
            ));
        };
        let (service, port) =
            service_ref(backend, namespace).map_err(|e| e.within("backendRef"))?;
        Ok(RequestMirror {
            service,
            port,
            percent: percent("percent", msg.percent)?,
        })
    }

    fn to_proto(&self) -> v1::RequestMirror {
        v1::RequestMirror {
            backend_ref: Some(to_service_ref(&self.service, self.port)),
            percent: Some(self.percent),
        }
    }
}
