//! HTTPRoute: rules that select HTTP requests by path, headers, query parameters and
//! method, and say where they go.

use http::{HeaderMap, Method};

use super::common::{self, at_most, route_message, Route, MAX_CONDITIONS};
use super::filter::{Filter, PathModifier, RouteKind};
use super::pattern::Pattern;
use super::refs::BackendRef;
use super::resilience::{RouteRetry, RouteTimeouts};
use super::value_match::{header_matches, HeaderMatch, QueryMatch};
use crate::model::Invalid;
use crate::v1;

/// The Gateway API's limit on one rule's matches.
const MAX_RULE_MATCHES: usize = 64;
const MAX_PATH: usize = 1024;

pub type HttpRoute = Route<HttpRule>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRule {
    pub name: Option<String>,
    /// Any one selects the rule; at least one (a rule written without matches has
    /// the Gateway API's default, a PathPrefix `/` that matches every request).
    pub matches: Vec<HttpMatch>,
    pub filters: Vec<Filter>,
    /// Empty: the parent service itself, as GAMMA meshes do (unless a redirect
    /// answers).
    pub backends: Vec<BackendRef>,
    pub timeouts: RouteTimeouts,
    pub retry: Option<RouteRetry<u16>>,
}

/// Every condition must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpMatch {
    pub path: PathMatch,
    pub headers: Vec<HeaderMatch>,
    pub query_params: Vec<QueryMatch>,
    pub method: Option<Method>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The whole path, case-sensitive.
    Exact(String),
    /// Whole path elements: `/abc` (or `/abc/`) matches `/abc`, `/abc/` and
    /// `/abc/def`, not `/abcd`.
    PathPrefix(String),
    /// The whole path matches the pattern.
    RegularExpression(Pattern),
}

/// What route matching reads of an HTTP request; nothing is copied.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    pub method: &'a Method,
    /// The path, without the query.
    pub path: &'a str,
    /// After `?`, still percent-encoded.
    pub query: Option<&'a str>,
    /// The Host header or :authority, as sent.
    pub authority: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

impl Default for HttpMatch {
    /// The Gateway API's default: every request.
    fn default() -> HttpMatch {
        HttpMatch {
            path: PathMatch::PathPrefix("/".to_owned()),
            headers: Vec::new(),
            query_params: Vec::new(),
            method: None,
        }
    }
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(exact) => path == exact,
            PathMatch::PathPrefix(prefix) => {
                let prefix = prefix.trim_end_matches('/');
                path.starts_with(prefix)
                    && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
            }
            PathMatch::RegularExpression(pattern) => pattern.matches(path),
        }
    }

    fn from_proto(msg: Option<&v1::HttpPathMatch>) -> Result<PathMatch, Invalid> {
        let Some(msg) = msg else {
            return Ok(PathMatch::PathPrefix("/".to_owned()));
        };
        let value = if msg.value.is_empty() {
            "/"
        } else {
            msg.value.as_str()
        };
        if value.len() > MAX_PATH {
            return Err(Invalid::new(
                "value",
                format!("longer than {MAX_PATH} characters"),
            ));
        }
        match msg.r#type.as_str() {
            "Exact" => validate_path(value).map(|()| PathMatch::Exact(value.to_owned())),
            "" | "PathPrefix" => {
                validate_path(value).map(|()| PathMatch::PathPrefix(value.to_owned()))
            }
            "RegularExpression" => Pattern::new("value", value).map(PathMatch::RegularExpression),
            other => Err(Invalid::new(
                "type",
                format!("{other:?} is not Exact, PathPrefix or RegularExpression"),
            )),
        }
    }

    fn to_proto(&self) -> v1::HttpPathMatch {
        let (kind, value) = match self {
            PathMatch::Exact(value) => ("Exact", value.as_str()),
            PathMatch::PathPrefix(value) => ("PathPrefix", value.as_str()),
            PathMatch::RegularExpression(pattern) => ("RegularExpression", pattern.as_str()),
        };
        v1::HttpPathMatch {
            r#type: kind.to_owned(),
            value: value.to_owned(),
        }
    }
}

/// The Gateway API's rules for Exact and PathPrefix values: an absolute path of
/// URL characters, without the segments and escapes that normalisation would change.
fn validate_path(value: &str) -> Result<(), Invalid> {
    let invalid = |why: &str| Invalid::new("value", format!("{value:?} {why}"));
    if !value.starts_with('/') {
        return Err(invalid("must start with '/'"));
    }
    for (bad, why) in [
        ("//", "must not contain '//'"),
        ("/./", "must not contain '/./'"),
        ("/../", "must not contain '/../'"),
        ("%2f", "must not contain '%2f'"),
        ("%2F", "must not contain '%2F'"),
        ("#", "must not contain '#'"),
    ] {
        if value.contains(bad) {
            return Err(invalid(why));
        }
    }
    if value.ends_with("/..") || value.ends_with("/.") {
        return Err(invalid("must not end with '/..' or '/.'"));
    }
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let escape = bytes.get(i + 1..i + 3);
            if !escape.is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit)) {
                return Err(invalid("has a '%' not followed by two hex digits"));
            }
            i += 3;
            continue;
        }
        if !(b.is_ascii_alphanumeric() || b"-/._~!$&'()*+,;=:@".contains(&b)) {
            return Err(invalid(
                "must only contain URL path characters (A-Z a-z 0-9 -/._~!$&'()*+,;=:@ and %XX)",
            ));
        }
        i += 1;
    }
    Ok(())
}

const METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

impl HttpMatch {
    pub fn matches(&self, request: &HttpRequest<'_>) -> bool {
        self.method.as_ref().is_none_or(|m| m == request.method)
            && self.path.matches(request.path)
            && self.headers.iter().all(|h| h.matches(request.headers))
            && self.query_params.iter().all(|q| q.matches(request.query))
    }

    fn from_proto(msg: &v1::HttpRouteMatch) -> Result<HttpMatch, Invalid> {
        let path = PathMatch::from_proto(msg.path.as_ref()).map_err(|e| e.within("path"))?;
        let headers = header_matches(&msg.headers)?;
        at_most("queryParams", msg.query_params.len(), MAX_CONDITIONS)?;
        let mut query_params: Vec<QueryMatch> = Vec::with_capacity(msg.query_params.len());
        for (i, param) in msg.query_params.iter().enumerate() {
            let field = format!("queryParams[{i}]");
            let param = QueryMatch::from_proto(param).map_err(|e| e.within(&field))?;
            if query_params.iter().any(|q| q.name == param.name) {
                return Err(Invalid::new(
                    format!("{field}.name"),
                    format!("query parameter {} is matched twice", param.name),
                ));
            }
            query_params.push(param);
        }
        let method = match msg.method.as_str() {
            "" => None,
            text => Some(
                METHODS
                    .iter()
                    .find(|m| m.as_str() == text)
                    .cloned()
                    .ok_or_else(|| {
                        Invalid::new(
                            "method",
                            format!(
                                "{text:?} is not one of {}",
                                METHODS.map(|m| m.as_str().to_owned()).join(", ")
                            ),
                        )
                    })?,
            ),
        };
        Ok(HttpMatch {
            path,
            headers,
            query_params,
            method,
        })
    }

    fn to_proto(&self) -> v1::HttpRouteMatch {
        let default_path = PathMatch::PathPrefix("/".to_owned());
        v1::HttpRouteMatch {
            path: (self.path != default_path).then(|| self.path.to_proto()),
            headers: self.headers.iter().map(HeaderMatch::to_proto).collect(),
            query_params: self.query_params.iter().map(QueryMatch::to_proto).collect(),
            method: self
                .method
                .as_ref()
                .map(|m| m.as_str().to_owned())
                .unwrap_or_default(),
        }
    }
}

impl HttpRule {
    fn from_proto(
        msg: &v1::HttpRouteRule,
        namespace: &str,
        earlier: &[Option<String>],
    ) -> Result<HttpRule, Invalid> {
        let name = common::rule_name(&msg.name, earlier)?;
        at_most("matches", msg.matches.len(), MAX_RULE_MATCHES)?;
        let mut matches = Vec::with_capacity(msg.matches.len().max(1));
        for (i, m) in msg.matches.iter().enumerate() {
            matches.push(HttpMatch::from_proto(m).map_err(|e| e.within(format!("matches[{i}]")))?);
        }
        if matches.is_empty() {
            matches.push(HttpMatch::default());
        }
        let filters = common::filters(&msg.filters, RouteKind::Http, namespace)?;
        let backends = common::backends(&msg.backend_refs, namespace)?;
        for (i, filter) in filters.iter().enumerate() {
            if matches!(filter, Filter::RequestRedirect(_)) && !backends.is_empty() {
                return Err(Invalid::new(
                    "backendRefs",
                    format!("must be empty: filters[{i}], a RequestRedirect, answers the requests itself"),
                ));
            }
            let prefix_modifier = matches!(
                filter.path_modifier(),
                Some(PathModifier::ReplacePrefixMatch(_))
            );
            let one_prefix_match = matches!(
                matches.as_slice(),
                [HttpMatch {
                    path: PathMatch::PathPrefix(_),
                    ..
                }]
            );
            if prefix_modifier && !one_prefix_match {
                return Err(Invalid::new(
                    format!("filters[{i}]"),
                    "ReplacePrefixMatch needs the rule to have exactly one match, with a PathPrefix path",
                ));
            }
        }
        let timeouts = RouteTimeouts::from_rule(msg.timeouts.as_ref())?;
        let retry = msg
            .retry
            .as_ref()
            .map(RouteRetry::<u16>::from_proto)
            .transpose()
            .map_err(|e| e.within("retry"))?;
        Ok(HttpRule {
            name,
            matches,
            filters,
            backends,
            timeouts,
            retry,
        })
    }

    fn to_proto(&self) -> v1::HttpRouteRule {
        v1::HttpRouteRule {
            name: self.name.clone().unwrap_or_default(),
            matches: common::matches_to_proto(&self.matches, HttpMatch::to_proto),
            filters: self.filters.iter().map(Filter::to_proto).collect(),
            backend_refs: self.backends.iter().map(BackendRef::to_proto).collect(),
            timeouts: self.timeouts.to_proto(),
            retry: self.retry.as_ref().map(RouteRetry::<u16>::to_proto),
        }
    }
}

impl HttpRoute {
    pub fn to_proto(&self) -> v1::HttpRoute {
        let (parent_refs, hostnames) = self.proto_refs();
        v1::HttpRoute {
            namespace: self.name.namespace.clone(),
            name: self.name.name.clone(),
            parent_refs,
            hostnames,
            rules: self.rules.iter().map(HttpRule::to_proto).collect(),
            creation_timestamp_ms: self.creation_timestamp_ms,
        }
    }
}

impl TryFrom<&v1::HttpRoute> for HttpRoute {
    type Error = Invalid;

    fn try_from(msg: &v1::HttpRoute) -> Result<HttpRoute, Invalid> {
        Route::from_message(
            route_message!(msg),
            |rule| rule.matches.len(),
            |rule, earlier| HttpRule::from_proto(rule, &msg.namespace, earlier),
            |rule| rule.name.clone(),
        )
    }
}
