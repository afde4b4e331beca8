//! Validation of route documents, through the same path a write takes: YAML, the
//! weft.v1 message, the model.

use super::*;
use crate::document::{parse, Document};
use crate::model::Invalid;
use crate::v1;
use std::time::Duration;

/// A route document with the given spec (indented by two spaces), its message.
fn message(kind: &str, spec: &str) -> Document {
    let text = format!("kind: {kind}\nmetadata: {{name: r, namespace: shop}}\nspec:\n{spec}");
    parse(&text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .remove(0)
}

fn http(spec: &str) -> Result<HttpRoute, Invalid> {
    match message("HTTPRoute", spec) {
        Document::HttpRoute(d) => HttpRoute::try_from(&d.to_proto()),
        other => panic!("{other:?}"),
    }
}

fn grpc(spec: &str) -> Result<GrpcRoute, Invalid> {
    match message("GRPCRoute", spec) {
        Document::GrpcRoute(d) => GrpcRoute::try_from(&d.to_proto()),
        other => panic!("{other:?}"),
    }
}

/// The error's field and reason, as `field: reason`.
fn http_error(spec: &str) -> String {
    http(spec).expect_err("invalid").to_string()
}

const FULL: &str = r#"  parentRefs:
  - {name: orders, port: 80}
  - {group: core, kind: Service, name: orders, namespace: other}
  hostnames: [orders.shop, "*.orders.example"]
  rules:
  - name: canary
    matches:
    - path: {type: Exact, value: /checkout}
      headers: [{name: X-Canary, value: "1"}, {type: RegularExpression, name: x-user, value: "u[0-9]+"}]
      queryParams: [{name: debug, value: "on"}]
      method: POST
    - path: {type: RegularExpression, value: "/api/v[0-9]+/.*"}
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-route, value: canary}], add: [{name: x-a, value: b}], remove: [x-debug]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {remove: [server]}
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow, port: 8080}, percent: 10}
    - type: weft.io/Fault
      fault: {delay: {fixedDelay: 100ms, percent: 5}, abort: {httpStatus: 503, percent: 1}}
    - type: weft.io/LocalRateLimit
      localRateLimit: {requestsPerUnit: 100, unit: second, burst: 200}
    backendRefs:
    - {name: orders-v1, weight: 90}
    - {name: orders-v2, namespace: canary, port: 8080, weight: 10}
    timeouts: {request: 10s, backendRequest: 2s}
    retry: {codes: [502, 503], attempts: 3, backoff: 100ms}
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: orders.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
  - matches: [{path: {value: /gone}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: example.com, port: 8443, statusCode: 301, path: {type: ReplaceFullPath, replaceFullPath: /here}}
  - {}
"#;

#[test]
fn a_full_route_converts_with_its_defaults_resolved() {
    let route = http(FULL).expect("valid");
    assert_eq!(route.parents.len(), 2);
    assert_eq!(route.parents[0].service.to_string(), "shop/orders");
    assert_eq!(route.parents[0].port, Some(80));
    assert_eq!(route.parents[1].service.to_string(), "other/orders");
    assert!(route.hostnames[1].is_wildcard());
    let canary = &route.rules[0];
    assert_eq!(canary.name.as_deref(), Some("canary"));
    assert_eq!(canary.matches[0].headers[0].name.as_str(), "x-canary");
    assert_eq!(canary.matches[0].method, Some(::http::Method::POST));
    assert!(matches!(
        canary.matches[1].path,
        PathMatch::RegularExpression(_)
    ));
    assert_eq!(canary.filters.len(), 5);
    assert_eq!(
        canary.filters[2],
        Filter::RequestMirror(RequestMirror {
            service: crate::model::ResourceName::new("shop", "shadow").expect("name"),
            port: Some(8080),
            percent: 10,
        })
    );
    assert_eq!(
        (
            canary.backends[0].weight,
            canary.backends[1].service.namespace.as_str()
        ),
        (90, "canary")
    );
    assert_eq!(
        canary.timeouts.request,
        Some(Timeout::After(Duration::from_secs(10)))
    );
    let retry = canary.retry.as_ref().expect("retry");
    assert_eq!(
        (retry.codes.clone(), retry.attempts),
        (vec![502, 503], Some(3))
    );
    // A rule without matches matches everything; the redirect's status stays.
    assert_eq!(route.rules[3].matches, [HttpMatch::default()]);
    assert!(route.rules[3].backends.is_empty());
    let Filter::RequestRedirect(redirect) = &route.rules[2].filters[0] else {
        panic!("not a redirect");
    };
    assert_eq!((redirect.status_code, redirect.port), (301, Some(8443)));
}

#[test]
fn a_route_survives_the_trip_through_its_message() {
    let route = http(FULL).expect("valid");
    assert_eq!(HttpRoute::try_from(&route.to_proto()), Ok(route.clone()));
    // What is stored is canonical: defaults left out, the group and kind dropped.
    let stored = route.to_proto();
    assert!(stored.rules[3].matches.is_empty());
    assert_eq!(stored.parent_refs[1].kind, "");
    assert_eq!(stored.rules[0].backend_refs[0].weight, Some(90));
}

#[test]
fn each_mistake_names_its_field() {
    let route = |rule: &str| format!("  parentRefs: [{{name: orders}}]\n  rules:\n  - {rule}\n");
    let cases: &[(&str, &str)] = &[
        ("matches: [{path: {type: Exact, value: api}}]", "spec.rules[0].matches[0].path.value: \"api\" must start with '/'"),
        ("matches: [{path: {value: /a//b}}]", "spec.rules[0].matches[0].path.value"),
        ("matches: [{path: {type: RegularExpression, value: \"/a(\"}}]", "spec.rules[0].matches[0].path.value: \"/a(\" is not a regular expression"),
        ("matches: [{path: {type: Prefix, value: /a}}]", "spec.rules[0].matches[0].path.type"),
        ("matches: [{method: FETCH}]", "spec.rules[0].matches[0].method"),
        ("matches: [{headers: [{name: a, value: x}, {name: A, value: y}]}]", "spec.rules[0].matches[0].headers[1].name"),
        ("matches: [{queryParams: [{name: 'a b', value: x}]}]", "spec.rules[0].matches[0].queryParams[0].name"),
        ("matches: [{headers: [{type: RegularExpression, name: a, value: \"[\"}]}]", "spec.rules[0].matches[0].headers[0].value"),
        ("backendRefs: [{name: Orders}]", "spec.rules[0].backendRefs[0].name"),
        ("backendRefs: [{name: o, kind: ServiceImport}]", "spec.rules[0].backendRefs[0].kind"),
        ("backendRefs: [{name: o, group: apps}]", "spec.rules[0].backendRefs[0].group"),
        ("backendRefs: [{name: o, weight: 1000001}]", "spec.rules[0].backendRefs[0].weight"),
        ("backendRefs: [{name: o, port: 70000}]", "spec.rules[0].backendRefs[0].port"),
        ("filters: [{type: CORS}]", "spec.rules[0].filters[0].type: \"CORS\" is not supported"),
        ("filters: [{type: ExtensionRef}]", "weft.io/Fault"),
        ("filters: [{type: RequestHeaderModifier}]", "spec.rules[0].filters[0].requestHeaderModifier: must be set"),
        ("filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m}}, fault: {}}]", "spec.rules[0].filters[0].fault: must not be set"),
        ("filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: a, value: x}], remove: [A]}}]", "spec.rules[0].filters[0].requestHeaderModifier.remove[0]"),
        ("filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: [Content-Length]}}]", "spec.rules[0].filters[0].requestHeaderModifier.remove[0]: header content-length frames"),
        ("filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: transfer-encoding, value: x}]}}]", "spec.rules[0].filters[0].responseHeaderModifier.set[0].name"),
        ("filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: host, value: x}]}}]", "URLRewrite sets that"),
        ("filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m}, percent: 101}}]", "spec.rules[0].filters[0].requestMirror.percent"),
        ("filters: [{type: RequestMirror, requestMirror: {}}]", "spec.rules[0].filters[0].requestMirror.backendRef"),
        ("filters: [{type: RequestRedirect, requestRedirect: {statusCode: 304}}]", "spec.rules[0].filters[0].requestRedirect.statusCode"),
        ("filters: [{type: RequestRedirect, requestRedirect: {scheme: ftp}}]", "spec.rules[0].filters[0].requestRedirect.scheme"),
        ("filters: [{type: RequestRedirect, requestRedirect: {}}]\n    backendRefs: [{name: o}]", "spec.rules[0].backendRefs: must be empty"),
        ("filters: [{type: RequestRedirect, requestRedirect: {}}, {type: URLRewrite, urlRewrite: {}}]", "spec.rules[0].filters[1].type"),
        ("filters: [{type: URLRewrite, urlRewrite: {hostname: '*.a'}}]", "spec.rules[0].filters[0].urlRewrite.hostname"),
        ("filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replaceFullPath: /x}}}]", "spec.rules[0].filters[0].urlRewrite.path"),
        ("matches: [{path: {type: Exact, value: /a}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}}}]", "spec.rules[0].filters[0]: ReplacePrefixMatch needs"),
        ("filters: [{type: weft.io/Fault, fault: {}}]", "spec.rules[0].filters[0].fault: needs a delay"),
        ("filters: [{type: weft.io/Fault, fault: {abort: {httpStatus: 503, grpcStatus: UNAVAILABLE}}}]", "spec.rules[0].filters[0].fault.abort"),
        ("filters: [{type: weft.io/Fault, fault: {abort: {grpcStatus: OK}}}]", "spec.rules[0].filters[0].fault.abort.grpcStatus"),
        ("filters: [{type: weft.io/Fault, fault: {delay: {fixedDelay: 1d}}}]", "spec.rules[0].filters[0].fault.delay.fixedDelay"),
        ("filters: [{type: weft.io/LocalRateLimit, localRateLimit: {requestsPerUnit: 0, unit: second}}]", "spec.rules[0].filters[0].localRateLimit.requestsPerUnit"),
        ("filters: [{type: weft.io/LocalRateLimit, localRateLimit: {requestsPerUnit: 1, unit: hour}}]", "spec.rules[0].filters[0].localRateLimit.unit"),
        ("filters: [{type: weft.io/LocalRateLimit, localRateLimit: {requestsPerUnit: 1, unit: second}}, {type: weft.io/LocalRateLimit, localRateLimit: {requestsPerUnit: 1, unit: second}}]", "spec.rules[0].filters[1].type: a rule takes one"),
        ("timeouts: {request: 10}", "spec.rules[0].timeouts.request"),
        ("timeouts: {request: 1s, backendRequest: 2s}", "spec.rules[0].timeouts.backendRequest"),
        ("retry: {codes: [200]}", "spec.rules[0].retry.codes[0]"),
        ("retry: {attempts: 11}", "spec.rules[0].retry.attempts"),
        ("retry: {backoff: fast}", "spec.rules[0].retry.backoff"),
        ("name: Not_A_Name", "spec.rules[0].name"),
    ];
    for (rule, expected) in cases {
        let error = http_error(&route(rule));
        assert!(
            error.contains(expected),
            "{rule}\n  gave {error}\n  expected {expected}"
        );
    }
}

#[test]
fn route_level_mistakes_name_their_field() {
    let rules = "  rules: [{}]\n";
    for (spec, expected) in [
        (
            format!("  parentRefs: []\n{rules}"),
            "spec.parentRefs: names no service",
        ),
        (
            format!("  parentRefs: [{{name: o}}, {{name: o}}]\n{rules}"),
            "spec.parentRefs[1]: appears twice",
        ),
        (
            format!("  parentRefs: [{{name: o, kind: Gateway}}]\n{rules}"),
            "spec.parentRefs[0].kind",
        ),
        (
            format!("  parentRefs: [{{name: o}}]\n  hostnames: [10.0.0.1]\n{rules}"),
            "spec.hostnames[0]",
        ),
        (
            "  parentRefs: [{name: o}]\n  rules: []\n".to_owned(),
            "spec.rules: needs at least one rule",
        ),
        (
            "  parentRefs: [{name: o}]\n  rules: [{name: a}, {name: a}]\n".to_owned(),
            "spec.rules[1].name",
        ),
    ] {
        let error = http_error(&spec);
        assert!(error.contains(expected), "{spec}\n  gave {error}");
    }
}

#[test]
fn unsupported_gateway_api_fields_are_refused_by_name() {
    for (spec, field) in [
        ("  parentRefs: [{name: o, sectionName: http}]\n  rules: [{}]\n", "sectionName"),
        ("  parentRefs: [{name: o}]\n  rules: [{sessionPersistence: {}}]\n", "sessionPersistence"),
        ("  parentRefs: [{name: o}]\n  rules: [{filters: [{type: CORS, cors: {}}]}]\n", "cors"),
        ("  parentRefs: [{name: o}]\n  rules: [{backendRefs: [{name: o, filters: []}]}]\n", "filters"),
        ("  parentRefs: [{name: o}]\n  rules: [{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m}, fraction: {numerator: 1}}}]}]\n", "fraction"),
    ] {
        let text = format!("kind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n{spec}");
        let error = parse(&text).expect_err("refused").to_string();
        assert!(error.contains(field) && error.contains("unknown field"), "{error}");
    }
}

#[test]
fn limits_bound_a_route() {
    let matches: String = (0..65)
        .map(|i| format!("{{path: {{value: /m{i}}}}},"))
        .collect();
    let error = http_error(&format!(
        "  parentRefs: [{{name: o}}]\n  rules: [{{matches: [{matches}]}}]\n"
    ));
    assert!(
        error.starts_with("spec.rules[0].matches: more than 64"),
        "{error}"
    );
    let rule = format!(
        "{{matches: [{}]}},",
        (0..40)
            .map(|i| format!("{{path: {{value: /m{i}}}}},"))
            .collect::<String>()
    );
    let error = http_error(&format!(
        "  parentRefs: [{{name: o}}]\n  rules: [{}]\n",
        rule.repeat(4)
    ));
    assert!(error.starts_with("spec.rules: 160 matches"), "{error}");
}

#[test]
fn grpc_routes_validate_their_methods_and_refuse_http_only_filters() {
    let route = grpc(
        "  parentRefs: [{name: payments}]
  rules:
  - matches:
    - method: {service: shop.Payments, method: Refund}
      headers: [{name: x-tenant, value: a}]
    - method: {type: RegularExpression, service: 'shop\\..*'}
    retry: {codes: [UNAVAILABLE], attempts: 2}
    timeouts: {request: 1s}
  - {}
",
    )
    .expect("valid");
    assert_eq!(
        route.rules[0].matches[0].method,
        Some(MethodMatch::Exact {
            service: Some("shop.Payments".into()),
            method: Some("Refund".into())
        })
    );
    assert_eq!(
        route.rules[0].retry.as_ref().map(|r| r.codes.clone()),
        Some(vec![GrpcCode::UNAVAILABLE])
    );
    assert_eq!(route.rules[1].matches, [GrpcMatch::default()]);
    assert_eq!(GrpcRoute::try_from(&route.to_proto()), Ok(route));

    let rule = |rule: &str| format!("  parentRefs: [{{name: p}}]\n  rules:\n  - {rule}\n");
    for (spec, expected) in [
        (
            rule("matches: [{method: {}}]"),
            "spec.rules[0].matches[0].method: needs a service",
        ),
        (
            rule("matches: [{method: {service: shop/Payments}}]"),
            "spec.rules[0].matches[0].method.service",
        ),
        (
            rule("matches: [{method: {method: 'Re fund'}}]"),
            "spec.rules[0].matches[0].method.method",
        ),
        (
            rule("matches: [{method: {type: RegularExpression, method: '('}}]"),
            "spec.rules[0].matches[0].method.method",
        ),
        (
            rule("filters: [{type: RequestRedirect, requestRedirect: {}}]"),
            "spec.rules[0].filters[0].type",
        ),
        (
            rule("retry: {codes: [503]}"),
            "spec.rules[0].retry.codes[0]",
        ),
    ] {
        let error = grpc(&spec).expect_err("invalid").to_string();
        assert!(error.contains(expected), "{spec}\n  gave {error}");
    }
}

#[test]
fn a_message_with_stray_fields_is_refused_not_trimmed() {
    // A client other than weftctl may set two filter sections; the second would be
    // a setting silently ignored.
    let mut message = match message("HTTPRoute", "  parentRefs: [{name: o}]\n  rules: [{}]\n") {
        Document::HttpRoute(d) => d.to_proto(),
        other => panic!("{other:?}"),
    };
    message.rules[0].filters.push(v1::RouteFilter {
        r#type: "RequestMirror".into(),
        request_mirror: Some(v1::RequestMirror {
            backend_ref: Some(v1::ServiceRef {
                name: "m".into(),
                ..Default::default()
            }),
            percent: None,
        }),
        url_rewrite: Some(v1::UrlRewrite::default()),
        ..Default::default()
    });
    let error = HttpRoute::try_from(&message).expect_err("refused");
    assert_eq!(error.field, "spec.rules[0].filters[0].urlRewrite");
}

#[test]
fn the_readme_route_examples_are_valid() {
    let readme = include_str!("../../../../README.md");
    let section = &readme[readme.find("### Routes").expect("a Routes section")..];
    let start = section.find("```yaml\n").expect("an example") + "```yaml\n".len();
    let example = &section[start..start + section[start..].find("```").expect("its end")];
    let documents = parse(example).expect("the example parses");
    assert_eq!(documents.len(), 2);
    for document in &documents {
        crate::resource::decode_resource(&document.to_resource()).unwrap_or_else(|e| panic!("{e}"));
    }
}
