//! The filters that change where a request goes: RequestRedirect (answered by the
//! proxy) and URLRewrite (applied before forwarding). HTTPRoute only.

use super::Invalid;
use crate::model::route::hostname::validate_precise_hostname;
use crate::model::route::PathMatch;
use crate::v1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Answers with a redirection instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRedirect {
    /// `None`: the request's.
    pub scheme: Option<Scheme>,
    /// `None`: the request's host.
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
    /// `None`: derived from the scheme as the Gateway API says (80 for http, 443 for
    /// https, left out of `Location` then).
    pub port: Option<u16>,
    /// 301, 302, 303, 307 or 308.
    pub status_code: u16,
}

/// Rewrites the request before it is forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlRewrite {
    /// Replaces the Host / :authority.
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathModifier {
    /// The whole path becomes this.
    ReplaceFullPath(String),
    /// The part the rule's PathPrefix match matched becomes this (see the Gateway
    /// API's table: `/foo/bar` with prefix `/foo` and replacement `/xyz` is `/xyz/bar`).
    ReplacePrefixMatch(String),
}

/// What a redirect's `Location` is built from when the redirect leaves it as it was.
#[derive(Debug, Clone, Copy)]
pub struct RedirectFrom<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The request's host, without its port.
    pub host: &'a str,
    /// The port the request was sent to (on a Gateway the listener's; in the mesh
    /// the service's).
    pub port: u16,
    /// The path, without the query.
    pub path: &'a str,
    /// After `?`, as sent.
    pub query: Option<&'a str>,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

fn hostname(text: &str) -> Result<Option<String>, Invalid> {
    if text.is_empty() {
        return Ok(None);
    }
    validate_precise_hostname(text).map_err(|e| e.within("hostname"))?;
    Ok(Some(text.to_owned()))
}

impl PathModifier {
    /// The path a request continues with (a rewrite) or is sent to (a redirect).
    /// `path` is the request's, without its query; `matched` the rule's match that
    /// selected it, whose PathPrefix a ReplacePrefixMatch replaces (validation makes
    /// it one). Whole path elements are replaced, as the Gateway API's table says.
    pub fn apply(&self, path: &str, matched: &PathMatch) -> String {
        let prefix = match self {
            PathModifier::ReplaceFullPath(full) => return full.clone(),
            PathModifier::ReplacePrefixMatch(prefix) => prefix.trim_end_matches('/'),
        };
        let matched = match matched {
            PathMatch::PathPrefix(value) => value.trim_end_matches('/'),
            _ => "",
        };
        let rest = path.strip_prefix(matched).unwrap_or(path);
        let rewritten = format!("{prefix}{rest}");
        if rewritten.starts_with('/') {
            rewritten
        } else {
            format!("/{rewritten}")
        }
    }

    pub(super) fn from_proto(msg: &v1::PathModifier) -> Result<PathModifier, Invalid> {
        let modifier = match (
            msg.r#type.as_str(),
            &msg.replace_full_path,
            &msg.replace_prefix_match,
        ) {
            ("ReplaceFullPath", Some(path), None) => {
                if !path.starts_with('/') {
                    return Err(Invalid::new(
                        "replaceFullPath",
                        format!("{path:?} must start with '/'"),
                    ));
                }
                PathModifier::ReplaceFullPath(path.clone())
            }
            ("ReplacePrefixMatch", None, Some(prefix)) => {
                if !prefix.is_empty() && !prefix.starts_with('/') {
                    return Err(Invalid::new(
                        "replacePrefixMatch",
                        format!("{prefix:?} must be empty or start with '/'"),
                    ));
                }
                PathModifier::ReplacePrefixMatch(prefix.clone())
            }
            ("ReplaceFullPath", _, _) => {
                return Err(Invalid::new(
                    "",
                    "type ReplaceFullPath takes replaceFullPath, and only it",
                ))
            }
            ("ReplacePrefixMatch", _, _) => {
                return Err(Invalid::new(
                    "",
                    "type ReplacePrefixMatch takes replacePrefixMatch, and only it",
                ))
            }
            (other, _, _) => {
                return Err(Invalid::new(
                    "type",
                    format!("{other:?} is not ReplaceFullPath or ReplacePrefixMatch"),
                ))
            }
        };
        let text = match &modifier {
            PathModifier::ReplaceFullPath(p) | PathModifier::ReplacePrefixMatch(p) => p,
        };
        if text.len() > 1024 || text.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(Invalid::new(
                "",
                format!("{text:?} must be at most 1024 visible ASCII characters"),
            ));
        }
        Ok(modifier)
    }

    pub(super) fn to_proto(&self) -> v1::PathModifier {
        match self {
            PathModifier::ReplaceFullPath(path) => v1::PathModifier {
                r#type: "ReplaceFullPath".to_owned(),
                replace_full_path: Some(path.clone()),
                replace_prefix_match: None,
            },
            PathModifier::ReplacePrefixMatch(prefix) => v1::PathModifier {
                r#type: "ReplacePrefixMatch".to_owned(),
                replace_full_path: None,
                replace_prefix_match: Some(prefix.clone()),
            },
        }
    }
}

fn path_modifier(msg: Option<&v1::PathModifier>) -> Result<Option<PathModifier>, Invalid> {
    msg.map(PathModifier::from_proto)
        .transpose()
        .map_err(|e| e.within("path"))
}

impl RequestRedirect {
    pub(super) fn from_proto(
        msg: Option<&v1::RequestRedirect>,
    ) -> Result<RequestRedirect, Invalid> {
        let msg = msg.cloned().unwrap_or_default();
        let scheme = match msg.scheme.as_str() {
            "" => None,
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            other => {
                return Err(Invalid::new(
                    "scheme",
                    format!("{other:?} is not http or https"),
                ))
            }
        };
        let port = match msg.port {
            0 => None,
            port => Some(
                u16::try_from(port)
                    .map_err(|_| Invalid::new("port", format!("{port} is not a port (1-65535)")))?,
            ),
        };
        let status_code = match msg.status_code {
            0 => 302,
            code @ (301 | 302 | 303 | 307 | 308) => code as u16,
            code => {
                return Err(Invalid::new(
                    "statusCode",
                    format!("{code} is not a redirect status (301, 302, 303, 307 or 308)"),
                ))
            }
        };
        Ok(RequestRedirect {
            scheme,
            hostname: hostname(&msg.hostname)?,
            path: path_modifier(msg.path.as_ref())?,
            port,
            status_code,
        })
    }

    pub(super) fn to_proto(&self) -> v1::RequestRedirect {
        v1::RequestRedirect {
            scheme: match self.scheme {
                None => String::new(),
                Some(Scheme::Http) => "http".to_owned(),
                Some(Scheme::Https) => "https".to_owned(),
            },
            hostname: self.hostname.clone().unwrap_or_default(),
            path: self.path.as_ref().map(PathModifier::to_proto),
            port: self.port.map(u32::from).unwrap_or(0),
            status_code: u32::from(self.status_code),
        }
    }
}

impl RequestRedirect {
    /// The `Location` a request is redirected to, by the Gateway API's rules: each
    /// part the redirect does not set is the request's; without a port, a scheme
    /// the redirect sets brings its well-known port (80, 443), else the port the
    /// request was sent to stays; the port is left out when it is its scheme's
    /// default. The query string is kept. `matched` is the match that selected
    /// the request (for ReplacePrefixMatch).
    pub fn location(&self, from: &RedirectFrom<'_>, matched: &PathMatch) -> String {
        let scheme: &str = match self.scheme {
            Some(scheme) => scheme.as_str(),
            None => from.scheme,
        };
        let port = match (self.port, self.scheme) {
            (Some(port), _) => port,
            (None, Some(Scheme::Http)) => 80,
            (None, Some(Scheme::Https)) => 443,
            (None, None) => from.port,
        };
        let host = self.hostname.as_deref().unwrap_or(from.host);
        let path = match &self.path {
            Some(modifier) => modifier.apply(from.path, matched),
            None => from.path.to_owned(),
        };
        let mut location = format!("{scheme}://{host}");
        if !matches!((scheme, port), ("http", 80) | ("https", 443)) {
            location.push(':');
            location.push_str(&port.to_string());
        }
        location.push_str(&path);
        if let Some(query) = from.query {
            location.push('?');
            location.push_str(query);
        }
        location
    }
}

impl UrlRewrite {
    pub(super) fn from_proto(msg: Option<&v1::UrlRewrite>) -> Result<UrlRewrite, Invalid> {
        let msg = msg.cloned().unwrap_or_default();
        Ok(UrlRewrite {
            hostname: hostname(&msg.hostname)?,
            path: path_modifier(msg.path.as_ref())?,
        })
    }

    pub(super) fn to_proto(&self) -> v1::UrlRewrite {
        v1::UrlRewrite {
            hostname: self.hostname.clone().unwrap_or_default(),
            path: self.path.as_ref().map(PathModifier::to_proto),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_replacement_follows_the_gateway_api_table() {
        let prefix = |value: &str| PathMatch::PathPrefix(value.to_owned());
        let replace = |value: &str| PathModifier::ReplacePrefixMatch(value.to_owned());
        for (path, matched, replacement, expected) in [
            ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo/", "/foo", "/xyz", "/xyz/"),
            ("/foo/bar", "/foo", "", "/bar"),
            ("/foo/", "/foo", "", "/"),
            ("/foo", "/foo", "", "/"),
            ("/foo/", "/foo", "/", "/"),
            ("/foo", "/foo", "/", "/"),
            // The default match, `/`: the replacement goes in front.
            ("/foo/bar", "/", "/xyz", "/xyz/foo/bar"),
        ] {
            assert_eq!(
                replace(replacement).apply(path, &prefix(matched)),
                expected,
                "{path} with {matched} replaced by {replacement:?}"
            );
        }
        let full = PathModifier::ReplaceFullPath("/here".to_owned());
        assert_eq!(full.apply("/foo/bar", &prefix("/foo")), "/here");
    }

    #[test]
    fn a_location_keeps_what_the_redirect_leaves_and_drops_default_ports() {
        let from = RedirectFrom {
            scheme: "http",
            host: "web.shop",
            port: 80,
            path: "/foo/bar",
            query: Some("a=1&b"),
        };
        let matched = PathMatch::PathPrefix("/foo".to_owned());
        let redirect = |scheme, hostname: Option<&str>, port, path| RequestRedirect {
            scheme,
            hostname: hostname.map(str::to_owned),
            path,
            port,
            status_code: 302,
        };
        let prefix = |p: &str| Some(PathModifier::ReplacePrefixMatch(p.to_owned()));
        for (redirect, expected) in [
            (
                redirect(None, None, None, None),
                "http://web.shop/foo/bar?a=1&b",
            ),
            (
                redirect(Some(Scheme::Https), None, None, None),
                "https://web.shop/foo/bar?a=1&b",
            ),
            (
                redirect(Some(Scheme::Https), None, Some(8443), None),
                "https://web.shop:8443/foo/bar?a=1&b",
            ),
            (
                redirect(None, Some("example.com"), Some(443), prefix("/")),
                "http://example.com:443/bar?a=1&b",
            ),
            (
                redirect(Some(Scheme::Http), None, Some(80), prefix("/x")),
                "http://web.shop/x/bar?a=1&b",
            ),
            (
                redirect(
                    None,
                    None,
                    None,
                    Some(PathModifier::ReplaceFullPath("/".to_owned())),
                ),
                "http://web.shop/?a=1&b",
            ),
        ] {
            assert_eq!(redirect.location(&from, &matched), expected, "{redirect:?}");
        }
        // A request sent to a port other than its scheme's keeps it, unless the
        // redirect sets a scheme (whose well-known port then applies).
        let other = RedirectFrom {
            port: 8080,
            query: None,
            ..from
        };
        assert_eq!(
            redirect(None, None, None, None).location(&other, &matched),
            "http://web.shop:8080/foo/bar"
        );
        assert_eq!(
            redirect(Some(Scheme::Https), None, None, None).location(&other, &matched),
            "https://web.shop/foo/bar"
        );
    }
}
