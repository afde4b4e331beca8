use std::sync::Arc;

use weft_proto::model::route::{
    HttpMatch, HttpRoute, HttpRule, PathModifier, RouteTimeouts, Scheme,
};
use weft_proto::model::ResourceName;

use super::*;
use crate::dataplane::http::routing::RuleOf;

fn prefix(value: &str) -> PathMatch {
    PathMatch::PathPrefix(value.to_owned())
}

fn request(uri: &str, host: Option<&str>) -> Request<()> {
    let mut builder = Request::builder().uri(uri);
    if let Some(host) = host {
        builder = builder.header(HOST, host);
    }
    builder.body(()).expect("request")
}

/// A rule matching `matched`, as route selection hands it over, for requests sent
/// to service port `port`.
fn rule(matched: PathMatch, port: u16) -> Matched {
    let route = HttpRoute {
        name: ResourceName::new("shop", "web").expect("name"),
        parents: Vec::new(),
        hostnames: Vec::new(),
        rules: vec![HttpRule {
            name: None,
            matches: vec![HttpMatch {
                path: matched,
                ..HttpMatch::default()
            }],
            filters: Vec::new(),
            backends: Vec::new(),
            timeouts: RouteTimeouts::default(),
            retry: None,
        }],
        creation_timestamp_ms: 0,
    };
    Matched {
        rule: RuleOf::Http(Arc::new(route), 0),
        match_index: 0,
        port,
    }
}

#[test]
fn a_prefix_rewrite_replaces_whole_segments_and_keeps_the_query() {
    let replace = |with: &str| UrlRewrite {
        hostname: None,
        path: Some(PathModifier::ReplacePrefixMatch(with.to_owned())),
    };
    for (uri, matched, with, expected) in [
        ("/foo/bar?x=1&y", "/foo", "/", "/bar?x=1&y"),
        ("/foo/bar", "/foo", "", "/bar"),
        ("/foo", "/foo", "/", "/"),
        ("/foo/", "/foo/", "/v2", "/v2/"),
        ("/foo/bar/baz?q", "/foo/bar", "/x", "/x/baz?q"),
    ] {
        let mut request = request(uri, Some("web.shop"));
        rewrite(&mut request, &replace(with), Some(&prefix(matched))).expect("rewrite");
        assert_eq!(
            request.uri().to_string(),
            expected,
            "{uri} with {matched} -> {with}"
        );
    }
}

#[test]
fn a_full_path_rewrite_keeps_the_query() {
    let full = UrlRewrite {
        hostname: None,
        path: Some(PathModifier::ReplaceFullPath("/status".to_owned())),
    };
    let mut request = request("/anything/here?verbose=1", Some("web.shop"));
    rewrite(&mut request, &full, Some(&prefix("/"))).expect("rewrite");
    assert_eq!(request.uri().to_string(), "/status?verbose=1");
}

#[test]
fn a_host_rewrite_replaces_host_and_authority_where_the_request_has_them() {
    let host = UrlRewrite {
        hostname: Some("orders.internal".to_owned()),
        path: None,
    };
    // HTTP/1: the Host header.
    let mut http1 = request("/a?b", Some("web.shop:80"));
    rewrite(&mut http1, &host, None).expect("rewrite");
    assert_eq!(http1.headers()[HOST], "orders.internal");
    assert_eq!(http1.uri().to_string(), "/a?b");
    // HTTP/2: `:authority`, and no Host added where there was none.
    let mut http2 = request("http://web.shop:80/a?b", None);
    rewrite(&mut http2, &host, None).expect("rewrite");
    assert_eq!(http2.uri().to_string(), "http://orders.internal/a?b");
    assert!(http2.headers().get(HOST).is_none());
}

#[test]
fn a_redirect_answers_with_its_status_and_location() {
    let redirect_to = |scheme, path| RequestRedirect {
        scheme,
        hostname: Some("example.com".to_owned()),
        path,
        port: None,
        status_code: 301,
    };
    let rule = rule(prefix("/old"), 80);
    let request = request("/old/page?id=7", Some("web.shop"));
    let plain = redirect(
        &request,
        &redirect_to(
            None,
            Some(PathModifier::ReplacePrefixMatch("/new".to_owned())),
        ),
        &rule,
    );
    assert_eq!(plain.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        plain.headers()[LOCATION],
        "http://example.com/new/page?id=7"
    );
    let secure = redirect(&request, &redirect_to(Some(Scheme::Https), None), &rule);
    assert_eq!(
        secure.headers()[LOCATION],
        "https://example.com/old/page?id=7"
    );
}

#[test]
fn a_redirect_keeps_the_request_host_and_a_non_default_service_port() {
    let keep = RequestRedirect {
        scheme: None,
        hostname: None,
        path: Some(PathModifier::ReplaceFullPath("/".to_owned())),
        port: None,
        status_code: 307,
    };
    let rule = rule(prefix("/"), 8080);
    let request = request("http://web.shop:8080/x", None);
    let answer = redirect(&request, &keep, &rule);
    assert_eq!(answer.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(answer.headers()[LOCATION], "http://web.shop:8080/");
    // A request naming no host cannot be sent back to it.
    let hostless = Request::builder().uri("/x").body(()).expect("request");
    assert_eq!(
        redirect(&hostless, &keep, &rule).status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
}
