//! Hop-by-hop headers (RFC 9110 section 7.6.1) and the request-target rewrites
//! needed when the two sides of the proxy speak different HTTP versions.
//!
//! `Connection` and every header it names apply to one connection only, as do
//! `Keep-Alive`, `Proxy-Connection`, `TE`, `Transfer-Encoding` and `Upgrade`; a
//! proxy removes them before forwarding. Two exceptions: an upgrade request keeps
//! `Connection: upgrade` and `Upgrade` (the upgrade is forwarded end to end, as
//! WebSocket needs), and `TE: trailers` stays because gRPC servers require it and
//! HTTP/2 allows exactly that value.
//!
//! [`normalize_http1`] is the one set of rules every HTTP/1 request head meets on
//! arrival, whichever server read it: the fields that say where a request goes
//! and how long its body is must say it once.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::{Method, Request, Version};

use super::h1client::decimal;

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Which of the headers the proxy acts on a message carries: the hop-by-hop ones
/// and `weft-retryable`. Found in one pass over the names, comparing without
/// hashing, so that a request pays a hashed lookup only for headers it has.
#[derive(Debug, Clone, Copy)]
pub struct Present(u8);

impl Present {
    pub fn scan(headers: &HeaderMap) -> Present {
        Present(
            headers
                .keys()
                .fold(0u8, |found, name| found | special_bit(name)),
        )
    }

    /// Whether there is an `Upgrade` header (see [`is_upgrade`] for the rest).
    pub fn upgrade(self) -> bool {
        self.0 & UPGRADE != 0
    }

    /// Whether there is a `weft-retryable` header.
    pub fn retryable(self) -> bool {
        self.0 & RETRYABLE != 0
    }
}

/// Removes hop-by-hop headers; `upgrade` keeps those an upgrade needs.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    strip_present(headers, Present::scan(headers), upgrade);
}

/// [`strip_hop_by_hop`] for headers already scanned (and unchanged since).
pub fn strip_present(headers: &mut HeaderMap, present: Present, upgrade: bool) {
    // Almost no request carries any of them (HTTP/2 forbids all but `TE:
    // trailers`), and most HTTP/1.1 responses carry only `Connection: keep-alive`:
    // only those found are looked up and removed.
    let found = present.0 & HOP_BY_HOP;
    if found == 0 {
        return;
    }
    if found & CONNECTION != 0 {
        // Removed at once (one lookup) unless an upgrade keeps it; a kept value is
        // cloned (shared bytes) to free `headers` for the removals below.
        let connection = if upgrade {
            headers.get(header::CONNECTION).cloned()
        } else {
            headers.remove(header::CONNECTION)
        };
        if let Some(connection) = connection {
            for token in connection.to_str().unwrap_or("").split(',') {
                let token = token.trim();
                // Names removed below anyway (or kept for an upgrade) need no
                // lookup of their own; any other named header is removed here.
                if !names_stripped_anyway(token) && !never_hop_by_hop(token) {
                    headers.remove(token);
                }
            }
        }
    }
    if found & KEEP_ALIVE_BIT != 0 {
        headers.remove(KEEP_ALIVE);
    }
    if found & PROXY_CONNECTION_BIT != 0 {
        headers.remove(PROXY_CONNECTION);
    }
    if found & TRANSFER_ENCODING != 0 {
        headers.remove(header::TRANSFER_ENCODING);
    }
    if found & UPGRADE != 0 && !upgrade {
        headers.remove(header::UPGRADE);
    }
    if found & TE != 0 {
        if let Some(te) = headers.get(header::TE) {
            if !te.as_bytes().eq_ignore_ascii_case(b"trailers") {
                headers.remove(header::TE);
            }
        }
    }
}

const CONNECTION: u8 = 1;
const TRANSFER_ENCODING: u8 = 2;
const UPGRADE: u8 = 4;
const TE: u8 = 8;
const KEEP_ALIVE_BIT: u8 = 16;
const PROXY_CONNECTION_BIT: u8 = 32;
const HOP_BY_HOP: u8 = 63;
const RETRYABLE: u8 = 64;

/// Which header the proxy acts on a name is (a bit of [`Present`]), 0 for any
/// other. Headers that a `Connection` header names are only removed when
/// `Connection` is present, which this also detects.
fn special_bit(name: &HeaderName) -> u8 {
    // Names are lowercase; matching the text is a length check and at most one
    // short comparison per header, cheaper than comparing `HeaderName` values.
    match name.as_str() {
        "connection" => CONNECTION,
        "transfer-encoding" => TRANSFER_ENCODING,
        "upgrade" => UPGRADE,
        "te" => TE,
        "keep-alive" => KEEP_ALIVE_BIT,
        "proxy-connection" => PROXY_CONNECTION_BIT,
        "weft-retryable" => RETRYABLE,
        _ => 0,
    }
}

/// Whether a `Connection` token names a header that [`strip_hop_by_hop`] removes
/// (or, for `upgrade`, deliberately keeps) whatever `Connection` says. `te` and
/// `connection` are not: naming them removes them even where the fixed rules
/// would keep them (`TE: trailers`, an upgrade's `Connection`).
fn names_stripped_anyway(token: &str) -> bool {
    [
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ]
    .iter()
    .any(|name| token.eq_ignore_ascii_case(name))
}

/// Whether a `Connection` token names a header that is never hop-by-hop, so that
/// naming it does not remove it: without `Host` the upstream could not tell which
/// site was asked for, and without `Content-Length` it could not frame the body
/// (HAProxy keeps both too).
fn never_hop_by_hop(token: &str) -> bool {
    ["host", "content-length"]
        .iter()
        .any(|name| token.eq_ignore_ascii_case(name))
}

/// Why an HTTP/1 request head is refused (400, then the connection closes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("more than one Host field")]
    Hosts,
    #[error("no Host field")]
    NoHost,
    #[error("a Host field that is no host")]
    BadHost,
    #[error("the asterisk target of a method other than OPTIONS")]
    Asterisk,
    #[error("Content-Length fields that disagree or are not a length")]
    Lengths,
}

/// Checks and repairs an HTTP/1 request head before it is routed: several Host
/// fields are refused (RFC 9112 section 3.2), an absolute-form target's
/// authority replaces Host (section 3.2.2, so that the host routed on is the
/// host the upstream reads), and a `Content-Length` repeated with one value
/// becomes one field (RFC 9110 section 8.6; values that differ are refused, as
/// both servers already do), so that no hop after this one can read two.
pub fn normalize_http1<B>(request: &mut Request<B>) -> Result<(), Malformed> {
    let headers = request.headers();
    // No field name repeats in almost every request: then neither Host nor
    // Content-Length does, and their lists need no lookup.
    let repeats = headers.len() != headers.keys_len();
    if repeats && headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Err(Malformed::Hosts);
    }
    let target_authority = request.uri().authority().is_some();
    match headers.get(header::HOST) {
        // An HTTP/1.1 request names its host (section 3.2); an absolute-form
        // target does so itself, and its authority replaces Host below.
        None if request.version() == Version::HTTP_11 && !target_authority => {
            return Err(Malformed::NoHost)
        }
        // Empty is allowed (a target with no authority); anything else must be
        // a host and an optional port, or hops after this one may read it apart.
        Some(value) if !target_authority && !is_host(value.as_bytes()) => {
            return Err(Malformed::BadHost)
        }
        _ => {}
    }
    // The asterisk form is for OPTIONS only (section 3.2.4).
    if request.uri().path() == "*"
        && request.uri().scheme().is_none()
        && request.method() != Method::OPTIONS
    {
        return Err(Malformed::Asterisk);
    }
    if !repeats {
        return replace_host_by_target(request);
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let length = match (lengths.next(), lengths.next()) {
        (Some(first), Some(second)) => {
            let length = decimal(first.as_bytes()).ok_or(Malformed::Lengths)?;
            let same = std::iter::once(second)
                .chain(lengths)
                .all(|value| decimal(value.as_bytes()) == Some(length));
            if !same {
                return Err(Malformed::Lengths);
            }
            Some(length)
        }
        _ => None,
    };
    if let Some(length) = length {
        request
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    replace_host_by_target(request)
}

/// An absolute-form target's authority replaces Host (section 3.2.2).
fn replace_host_by_target<B>(request: &mut Request<B>) -> Result<(), Malformed> {
    if let Some(authority) = request.uri().authority() {
        // The host and port, without any userinfo.
        let host = authority
            .as_str()
            .rsplit_once('@')
            .map_or(authority.as_str(), |(_, host)| host);
        if let Ok(value) = HeaderValue::from_str(host) {
            request.headers_mut().insert(header::HOST, value);
        }
    }
    Ok(())
}

/// Whether a Host value is a host and an optional port (RFC 3986's reg-name or
/// IP literal, `:port`), or empty: a table lookup per byte, not a URI parse, as it
/// runs for every request. Space, `@`, `/`, `?`, `#` and control bytes are what
/// would let two hops read one value apart.
fn is_host(value: &[u8]) -> bool {
    value.iter().all(|b| HOST_BYTES[usize::from(*b)])
}

const HOST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
                    | b'%'
            );
        b += 1;
    }
    table
};

/// Whether an HTTP/1.1 request asks to turn its connection into a tunnel: a
/// CONNECT (RFC 9110 section 9.3.6), or a switch of protocols (`Connection:
/// upgrade` + `Upgrade`).
pub fn is_upgrade<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    if request.version() != Version::HTTP_11 {
        return false;
    }
    if request.method() == Method::CONNECT {
        return true;
    }
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v, "upgrade"))
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .unwrap_or("")
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Prepares a request that arrived over HTTP/2 for an HTTP/1 upstream: origin-form
/// target and a Host header from `:authority`.
pub fn to_http1<B>(request: &mut Request<B>) {
    if let Some(authority) = request.uri().authority() {
        if !request.headers().contains_key(header::HOST) {
            if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
                request.headers_mut().insert(header::HOST, value);
            }
        }
    }
    if request.uri().scheme().is_some() {
        let path = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        if let Ok(uri) = path.parse::<Uri>() {
            *request.uri_mut() = uri;
        }
    }
    *request.version_mut() = Version::HTTP_11;
}

/// Prepares a request that arrived over HTTP/1 for an HTTP/2 upstream: HTTP/2
/// needs `:scheme` and `:authority`, taken from the Host header (which HTTP/2
/// replaces). Without a host, `fallback` (the endpoint address) names the target.
pub fn to_http2<B>(request: &mut Request<B>, fallback: &str) {
    let host = request.headers_mut().remove(header::HOST);
    if request.uri().authority().is_none() {
        let authority = host
            .as_ref()
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .or_else(|| Authority::try_from(fallback).ok());
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = authority;
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    *request.version_mut() = Version::HTTP_2;
}

/// The authority a request is for: `:authority` (HTTP/2, absolute-form) or Host.
pub fn authority<B>(request: &Request<B>) -> Option<&str> {
    request
        .uri()
        .authority()
        .map(Authority::as_str)
        .or_else(|| request.headers().get(header::HOST)?.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_and_the_headers_it_names_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("close, x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert("x-end", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("gzip"));
        headers.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        strip_hop_by_hop(&mut headers, false);
        let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-end"]);
    }

    #[test]
    fn named_headers_go_whatever_their_case_even_te_trailers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Hop ,TE"),
        );
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert("x-end", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers, false);
        let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-end"]);
    }

    #[test]
    fn a_scan_finds_the_headers_the_proxy_acts_on() {
        let mut headers = HeaderMap::new();
        headers.insert("x-end", HeaderValue::from_static("1"));
        let plain = Present::scan(&headers);
        assert!(!plain.upgrade() && !plain.retryable());
        headers.insert("Weft-Retryable", HeaderValue::from_static("true"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let marked = Present::scan(&headers);
        assert!(marked.upgrade() && marked.retryable());
        // weft-retryable is no hop-by-hop header: stripping leaves it alone.
        strip_present(&mut headers, marked, false);
        let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-end", "weft-retryable"]);
    }

    #[test]
    fn te_trailers_and_upgrades_survive() {
        let mut headers = HeaderMap::new();
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers.len(), 3);
    }

    #[test]
    fn a_connect_or_an_upgrade_over_http1_1_asks_for_a_tunnel() {
        let request = |method: Method, version: Version, upgrade: bool| {
            let mut builder = Request::builder()
                .method(method)
                .uri("db.internal:5432")
                .version(version);
            if upgrade {
                builder = builder
                    .header(header::CONNECTION, "keep-alive, Upgrade")
                    .header(header::UPGRADE, "websocket");
            }
            builder.body(()).expect("request")
        };
        assert!(is_upgrade(&request(
            Method::CONNECT,
            Version::HTTP_11,
            false
        )));
        assert!(is_upgrade(&request(Method::GET, Version::HTTP_11, true)));
        assert!(!is_upgrade(&request(Method::GET, Version::HTTP_11, false)));
        assert!(!is_upgrade(&request(
            Method::CONNECT,
            Version::HTTP_10,
            false
        )));
        assert!(!is_upgrade(&request(
            Method::CONNECT,
            Version::HTTP_2,
            false
        )));
        assert!(!is_upgrade(&request(Method::GET, Version::HTTP_2, true)));
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_removed() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
            "te",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            headers.insert("x-end", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut headers, false);
            let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
            assert_eq!(left, vec!["x-end"], "{name}");
        }
    }

    #[test]
    fn a_request_must_name_one_valid_host_and_only_options_may_ask_for_the_asterisk() {
        let mut missing = head(&[], "/x");
        assert_eq!(normalize_http1(&mut missing), Err(Malformed::NoHost));
        let mut old = head(&[], "/x");
        *old.version_mut() = Version::HTTP_10;
        normalize_http1(&mut old).expect("HTTP/1.0 needs no Host");
        let mut spaced = head(&[("host", "h test")], "/x");
        assert_eq!(normalize_http1(&mut spaced), Err(Malformed::BadHost));
        let mut empty = head(&[("host", "")], "/x");
        normalize_http1(&mut empty).expect("an empty Host is allowed");
        let mut ported = head(&[("host", "web.t:8080")], "/x");
        normalize_http1(&mut ported).expect("host and port");
        let mut star = head(&[("host", "web.t")], "*");
        assert_eq!(normalize_http1(&mut star), Err(Malformed::Asterisk));
        let mut options = head(&[("host", "web.t")], "*");
        *options.method_mut() = Method::OPTIONS;
        normalize_http1(&mut options).expect("OPTIONS *");
    }

    #[test]
    fn connection_cannot_remove_host_or_content_length() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("web.t"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        headers.insert("x-trace", HeaderValue::from_static("1"));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("Host, content-length, x-trace"),
        );
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers[header::HOST], "web.t");
        assert_eq!(headers[header::CONTENT_LENGTH], "5");
        assert!(headers.get("x-trace").is_none());
        assert!(headers.get(header::CONNECTION).is_none());
    }

    fn head(fields: &[(&str, &str)], target: &str) -> Request<()> {
        let mut request = Request::get(target).body(()).expect("request");
        for (name, value) in fields {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("name");
            let value = HeaderValue::from_str(value).expect("value");
            request.headers_mut().append(name, value);
        }
        request
    }

    #[test]
    fn several_host_fields_are_refused_and_the_target_authority_wins() {
        let mut two = head(&[("host", "a.t"), ("host", "b.t")], "/x");
        assert_eq!(normalize_http1(&mut two), Err(Malformed::Hosts));
        let mut same = head(&[("host", "a.t"), ("host", "a.t")], "/x");
        assert_eq!(normalize_http1(&mut same), Err(Malformed::Hosts));

        let mut absolute = head(&[("host", "other.t")], "http://user@web.t:8080/route");
        normalize_http1(&mut absolute).expect("valid");
        let hosts: Vec<_> = absolute.headers().get_all(header::HOST).iter().collect();
        assert_eq!(hosts, ["web.t:8080"]);
        assert_eq!(authority(&absolute), Some("user@web.t:8080"));

        let mut without = head(&[], "http://web.t/route");
        normalize_http1(&mut without).expect("valid");
        assert_eq!(without.headers()[header::HOST], "web.t");
        let mut origin = head(&[("host", "web.t")], "/route");
        normalize_http1(&mut origin).expect("valid");
        assert_eq!(origin.headers()[header::HOST], "web.t");
    }

    #[test]
    fn a_repeated_content_length_becomes_one_field_or_is_refused() {
        let mut equal = head(
            &[
                ("host", "h"),
                ("content-length", "5"),
                ("content-length", "005"),
            ],
            "/",
        );
        normalize_http1(&mut equal).expect("valid");
        let lengths: Vec<_> = equal
            .headers()
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .collect();
        assert_eq!(lengths, ["5"]);
        for values in [["5", "6"], ["5", "+5"], ["x", "x"], ["5", "5, 5"]] {
            let mut request = head(
                &[
                    ("host", "h"),
                    ("content-length", values[0]),
                    ("content-length", values[1]),
                ],
                "/",
            );
            assert_eq!(
                normalize_http1(&mut request),
                Err(Malformed::Lengths),
                "{values:?}"
            );
        }
        let mut single = head(&[("host", "h"), ("content-length", "007")], "/");
        normalize_http1(&mut single).expect("valid");
        assert_eq!(single.headers()[header::CONTENT_LENGTH], "007");
    }

    #[test]
    fn versions_are_translated() {
        let mut request = Request::get("http://orders.shop:8080/a?b=1")
            .version(Version::HTTP_2)
            .body(())
            .expect("request");
        to_http1(&mut request);
        assert_eq!(request.uri(), "/a?b=1");
        assert_eq!(request.headers()[header::HOST], "orders.shop:8080");

        let mut request = Request::get("/x")
            .header(header::HOST, "orders.shop")
            .body(())
            .expect("request");
        to_http2(&mut request, "10.0.0.1:80");
        assert_eq!(request.uri(), "http://orders.shop/x");
        assert!(!request.headers().contains_key(header::HOST));
    }
}
