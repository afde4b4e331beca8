//! Precedence and selection, on the Gateway API's own examples where it gives them.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use proptest::prelude::*;

use super::*;
use crate::document::{parse, Document};
use crate::model::Service;

fn document(kind: &str, namespace: &str, name: &str, spec: &str) -> Document {
    let text =
        format!("kind: {kind}\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}");
    parse(&text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .remove(0)
}

/// An HTTPRoute in `namespace/name`, created at `created` (ms), attached to
/// shop/orders unless its spec says otherwise.
fn http_route(namespace: &str, name: &str, created: u64, spec: &str) -> Arc<HttpRoute> {
    let spec = if spec.contains("parentRefs") {
        spec.to_owned()
    } else {
        format!("  parentRefs: [{{name: orders, namespace: shop}}]\n{spec}")
    };
    let Document::HttpRoute(d) = document("HTTPRoute", namespace, name, &spec) else {
        panic!("not an HTTPRoute");
    };
    let mut message = d.to_proto();
    message.creation_timestamp_ms = created;
    Arc::new(HttpRoute::try_from(&message).unwrap_or_else(|e| panic!("{e}\n{spec}")))
}

fn grpc_route(namespace: &str, name: &str, created: u64, spec: &str) -> Arc<GrpcRoute> {
    let spec = if spec.contains("parentRefs") {
        spec.to_owned()
    } else {
        format!("  parentRefs: [{{name: orders, namespace: shop}}]\n{spec}")
    };
    let Document::GrpcRoute(d) = document("GRPCRoute", namespace, name, &spec) else {
        panic!("not a GRPCRoute");
    };
    let mut message = d.to_proto();
    message.creation_timestamp_ms = created;
    Arc::new(GrpcRoute::try_from(&message).unwrap_or_else(|e| panic!("{e}\n{spec}")))
}

/// shop/orders: http on 80, grpc on 9090, tcp on 5432.
fn orders() -> Service {
    let Document::Service(d) = document(
        "Service",
        "shop",
        "orders",
        "  ports:\n  - {name: http, port: 80, protocol: http1}\n  - {name: grpc, port: 9090, protocol: grpc}\n  - {name: db, port: 5432, protocol: tcp}\n",
    ) else {
        panic!("not a service");
    };
    Service::try_from(&d.to_proto()).expect("valid service")
}

/// A request as tests write it: `GET /path?query`, headers `name: value`.
struct Request {
    method: Method,
    path: String,
    query: Option<String>,
    authority: Option<String>,
    headers: HeaderMap,
}

fn request(line: &str, headers: &[(&str, &str)]) -> Request {
    let (method, target) = line.split_once(' ').expect("METHOD target");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    Request {
        method: method.parse().expect("method"),
        path: path.to_owned(),
        query,
        authority: Some("orders.shop".to_owned()),
        headers: map,
    }
}

impl Request {
    fn host(mut self, authority: &str) -> Request {
        self.authority = Some(authority.to_owned());
        self
    }

    fn view(&self) -> HttpRequest<'_> {
        HttpRequest {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            authority: self.authority.as_deref(),
            headers: &self.headers,
        }
    }
}

/// `route/rule` of the chosen rule (rules are named in these tests), or `none`.
fn chosen<R: RouteRule + Named>(selection: Option<Selection<'_, R>>) -> String {
    match selection {
        None => "none".to_owned(),
        Some(s) => format!("{}/{}", s.rule.route.name.name, s.rule.rule().rule_name()),
    }
}

trait Named {
    fn rule_name(&self) -> &str;
}

impl Named for HttpRule {
    fn rule_name(&self) -> &str {
        self.name.as_deref().unwrap_or("-")
    }
}

impl Named for GrpcRule {
    fn rule_name(&self) -> &str {
        self.name.as_deref().unwrap_or("-")
    }
}

fn table(routes: &[Arc<HttpRoute>]) -> HttpTable {
    Table::compile(routes, &ResourceName::new("shop", "orders").expect("name"))
}

fn select(table: &HttpTable, request: &Request) -> String {
    chosen(table.select(&request.view()))
}

#[test]
fn exact_beats_the_longest_prefix_which_beats_shorter_ones() {
    // The Gateway API's path-match-order conformance case, in one route.
    let routes = [http_route(
        "shop",
        "r",
        0,
        "  rules:
  - {name: root, matches: [{path: {value: /}}]}
  - {name: match, matches: [{path: {value: /match}}]}
  - {name: match-exact, matches: [{path: {value: /match/exact}}]}
  - {name: exact-one, matches: [{path: {type: Exact, value: /match/exact/one}}]}
  - {name: prefix-one, matches: [{path: {value: /match/prefix/one}}]}
  - {name: exact-prefix-one, matches: [{path: {type: Exact, value: /match/prefix/one}}]}
",
    )];
    let table = table(&routes);
    for (path, rule) in [
        ("/", "root"),
        ("/other", "root"),
        ("/match", "match"),
        ("/matchx", "root"),
        ("/match/", "match"),
        ("/match/exact", "match-exact"),
        ("/match/exact/one", "exact-one"),
        ("/match/exact/one/two", "match-exact"),
        ("/match/exact/two", "match-exact"),
        ("/match/prefix/one", "exact-prefix-one"),
        ("/match/prefix/one/x", "prefix-one"),
    ] {
        assert_eq!(
            select(&table, &request(&format!("GET {path}"), &[])),
            format!("r/{rule}"),
            "{path}"
        );
    }
}

#[test]
fn then_a_method_then_the_most_headers_then_the_most_query_params() {
    // The Gateway API's method-matching conformance cases: a PathPrefix longer than
    // `/` beats a method; a method beats headers.
    let routes = [http_route(
        "shop",
        "r",
        0,
        "  rules:
  - {name: patch, matches: [{method: PATCH}]}
  - {name: path5, matches: [{path: {value: /path5}}]}
  - {name: headers, matches: [{headers: [{name: version, value: four}]}]}
  - {name: two-headers, matches: [{headers: [{name: version, value: four}, {name: color, value: blue}]}]}
  - {name: query, matches: [{headers: [{name: version, value: four}, {name: color, value: blue}], queryParams: [{name: q, value: '1'}]}]}
",
    )];
    let table = table(&routes);
    assert_eq!(select(&table, &request("PATCH /path5", &[])), "r/path5");
    assert_eq!(
        select(&table, &request("PATCH /", &[("version", "four")])),
        "r/patch"
    );
    assert_eq!(
        select(&table, &request("GET /", &[("version", "four")])),
        "r/headers"
    );
    let both = [("version", "four"), ("color", "blue")];
    assert_eq!(select(&table, &request("GET /", &both)), "r/two-headers");
    assert_eq!(select(&table, &request("GET /?q=1", &both)), "r/query");
    assert_eq!(select(&table, &request("GET /", &[])), "none");
}

#[test]
fn the_any_of_example_of_the_spec_matches_either_condition() {
    // HTTPRouteRule.matches: "path prefixed with /foo AND the header version: v2, OR
    // the path prefix /v2/foo".
    let routes = [http_route(
        "shop",
        "r",
        0,
        "  rules:
  - name: v2
    matches:
    - path: {value: /foo}
      headers: [{name: version, value: v2}]
    - path: {value: /v2/foo}
",
    )];
    let table = table(&routes);
    assert_eq!(
        select(&table, &request("GET /foo/x", &[("version", "v2")])),
        "r/v2"
    );
    assert_eq!(select(&table, &request("GET /v2/foo", &[])), "r/v2");
    assert_eq!(select(&table, &request("GET /foo/x", &[])), "none");
}

#[test]
fn regular_expressions_rank_between_exact_paths_and_prefixes() {
    let routes = [http_route(
        "shop",
        "r",
        0,
        "  rules:
  - {name: catch-all, matches: [{path: {value: /}}]}
  - {name: users-prefix, matches: [{path: {value: /users/admin}}]}
  - {name: user-id, matches: [{path: {type: RegularExpression, value: '/users/[a-z0-9]+'}}]}
  - {name: exact, matches: [{path: {type: Exact, value: /users/me}}]}
  - {name: regex-get, matches: [{path: {type: RegularExpression, value: '/v[0-9]/.*'}, method: GET}]}
  - {name: regex-any, matches: [{path: {type: RegularExpression, value: '/v1/.*'}}]}
",
    )];
    let table = table(&routes);
    assert_eq!(select(&table, &request("GET /users/42", &[])), "r/user-id");
    assert_eq!(
        select(&table, &request("GET /users/admin", &[])),
        "r/user-id"
    );
    assert_eq!(select(&table, &request("GET /users/me", &[])), "r/exact");
    assert_eq!(
        select(&table, &request("GET /users/42/orders", &[])),
        "r/catch-all"
    );
    // Between two expressions, length says nothing: the method decides.
    assert_eq!(select(&table, &request("GET /v1/x", &[])), "r/regex-get");
    assert_eq!(select(&table, &request("POST /v1/x", &[])), "r/regex-any");
}

#[test]
fn ties_go_to_the_oldest_route_then_by_name_then_to_the_first_rule() {
    let rules = "  rules:\n  - {name: one}\n  - {name: two}\n";
    let newer = http_route("shop", "a-newer", 2_000, rules);
    let older = http_route("shop", "z-older", 1_000, rules);
    assert_eq!(
        select(
            &table(&[newer.clone(), older.clone()]),
            &request("GET /", &[])
        ),
        "z-older/one"
    );
    let b = http_route("shop", "b", 1_000, rules);
    let a = http_route("shop", "a", 1_000, rules);
    assert_eq!(select(&table(&[b, a]), &request("GET /", &[])), "a/one");
    // By `namespace/name` as a string: `shop-x/...` sorts before `shop/...`.
    let other = http_route("shop-x", "z", 1_000, rules);
    let own = http_route("shop", "a", 1_000, rules);
    assert_eq!(
        select(&table(&[own, other]), &request("GET /", &[])),
        "z/one"
    );
    // More specific matches win whatever the age.
    let specific = http_route(
        "shop",
        "young",
        9_000,
        "  rules: [{name: api, matches: [{path: {value: /api}}]}]\n",
    );
    assert_eq!(
        select(&table(&[older, specific]), &request("GET /api", &[])),
        "young/api"
    );
}

#[test]
fn the_most_specific_matching_hostname_wins_and_others_still_apply() {
    let wildcard = http_route(
        "shop",
        "wildcard",
        0,
        "  hostnames: ['*.example.com']\n  rules: [{name: all}]\n",
    );
    let exact = http_route(
        "shop",
        "exact",
        0,
        "  hostnames: [foo.example.com]\n  rules: [{name: api, matches: [{path: {value: /api}}]}]\n",
    );
    let anyhost = http_route(
        "shop",
        "anyhost",
        0,
        "  rules: [{name: exact-path, matches: [{path: {type: Exact, value: /api}}]}]\n",
    );
    let table = table(&[wildcard, exact, anyhost]);
    let at =
        |host: &str, path: &str| select(&table, &request(&format!("GET {path}"), &[]).host(host));
    // Hostname precedence comes before the path's.
    assert_eq!(at("foo.example.com:8080", "/api"), "exact/api");
    assert_eq!(at("Foo.Example.com", "/api/x"), "exact/api");
    assert_eq!(at("bar.example.com", "/api"), "wildcard/all");
    // Where the more specific host's rules do not match, the others still do.
    assert_eq!(at("foo.example.com", "/other"), "wildcard/all");
    assert_eq!(at("example.com", "/api"), "anyhost/exact-path");
    assert_eq!(at("example.com", "/other"), "none");
}

fn grpc_select(table: &GrpcTable, service: &str, method: &str, headers: &[(&str, &str)]) -> String {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    let path = format!("/{service}/{method}");
    let request = GrpcRequest::from_path(&path, Some("orders.shop"), &map).expect("a gRPC path");
    chosen(table.select(&request))
}

#[test]
fn grpc_precedence_is_service_then_method_then_headers() {
    let route = grpc_route(
        "shop",
        "g",
        0,
        "  rules:
  - {name: any}
  - {name: method, matches: [{method: {method: Refund}}]}
  - {name: service, matches: [{method: {service: shop.Payments}}]}
  - {name: both, matches: [{method: {service: shop.Payments, method: Refund}}]}
  - {name: both-header, matches: [{method: {service: shop.Payments, method: Refund}, headers: [{name: x-tenant, value: a}]}]}
  - {name: longer-service, matches: [{method: {service: shop.PaymentsV2}}]}
  - {name: regex, matches: [{method: {type: RegularExpression, service: 'shop\\..*', method: 'Get.*'}}]}
",
    );
    let table = Table::compile(
        &[route],
        &ResourceName::new("shop", "orders").expect("name"),
    );
    assert_eq!(
        grpc_select(&table, "shop.Payments", "Refund", &[("x-tenant", "a")]),
        "g/both-header"
    );
    assert_eq!(
        grpc_select(&table, "shop.Payments", "Refund", &[]),
        "g/both"
    );
    assert_eq!(
        grpc_select(&table, "shop.Payments", "Charge", &[]),
        "g/service"
    );
    assert_eq!(grpc_select(&table, "other.Svc", "Refund", &[]), "g/method");
    assert_eq!(
        grpc_select(&table, "shop.PaymentsV2", "Refund", &[]),
        "g/longer-service"
    );
    // An exact service beats an expression; an expression beats no condition.
    assert_eq!(
        grpc_select(&table, "shop.Payments", "GetAll", &[]),
        "g/service"
    );
    assert_eq!(grpc_select(&table, "shop.Orders", "GetAll", &[]), "g/regex");
    assert_eq!(grpc_select(&table, "other.Svc", "Other", &[]), "g/any");
    assert!(GrpcRequest::from_path("/not-grpc", None, &HeaderMap::new()).is_none());
    assert!(GrpcRequest::from_path("/a/b/c", None, &HeaderMap::new()).is_none());
}

#[test]
fn a_rule_without_backends_forwards_to_its_parent_and_a_redirect_to_nothing() {
    let route = http_route(
        "shop",
        "r",
        0,
        "  rules:
  - {name: parent}
  - name: redirect
    matches: [{path: {value: /old}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: new.shop}}]
  - {name: drained, matches: [{path: {value: /drained}}], backendRefs: [{name: v1, weight: 0}]}
",
    );
    let table = table(&[route]);
    let parent = table
        .select(&request("GET /", &[]).view())
        .expect("selected");
    let backend = parent.rule.backends.pick(7).expect("the parent");
    assert_eq!(
        (backend.service.to_string(), backend.port),
        ("shop/orders".to_owned(), None)
    );
    let redirect = table
        .select(&request("GET /old", &[]).view())
        .expect("selected");
    assert!(redirect.rule.backends.refs().is_empty());
    let drained = table
        .select(&request("GET /drained", &[]).view())
        .expect("selected");
    assert_eq!(drained.rule.backends.pick(7), None, "all weights 0: a 500");
    assert_eq!(table.rules().len(), 3);
    assert_eq!(drained.index, 2);
}

#[test]
fn routes_attach_per_port_and_grpc_routes_take_a_port_from_http_routes() {
    let service = orders();
    let http_all = http_route("shop", "http-all", 0, "  rules: [{name: h}]\n");
    let grpc_all = grpc_route("shop", "grpc-all", 0, "  rules: [{name: g}]\n");
    let routes = ServiceRoutes::compile(&service, &[http_all], &[grpc_all]);
    assert!(matches!(
        routes.for_caller(80, "shop"),
        Some(RouteTable::Http(_))
    ));
    assert!(matches!(
        routes.for_caller(9090, "shop"),
        Some(RouteTable::Grpc(_))
    ));
    assert!(
        routes.for_caller(5432, "shop").is_none(),
        "no routes on a tcp port"
    );
    assert!(routes.for_caller(1234, "shop").is_none());

    let only_grpc_port = http_route(
        "shop",
        "on-9090",
        0,
        "  parentRefs: [{name: orders, port: 9090}]\n  rules: [{name: h}]\n",
    );
    let routes = ServiceRoutes::compile(&service, &[only_grpc_port], &[]);
    assert!(routes.for_caller(80, "shop").is_none());
    assert!(matches!(
        routes.for_caller(9090, "shop"),
        Some(RouteTable::Http(_))
    ));

    let elsewhere = http_route(
        "shop",
        "elsewhere",
        0,
        "  parentRefs: [{name: users}]\n  rules: [{name: h}]\n",
    );
    let none = ServiceRoutes::compile(&service, &[elsewhere], &[]);
    assert!(none.is_empty() && none.for_caller(80, "shop").is_none());
    assert!(ServiceRoutes::default().is_empty());
}

#[test]
fn consumer_routes_replace_the_producers_for_callers_in_their_namespace() {
    let service = orders();
    let producer = http_route("shop", "producer", 0, "  rules: [{name: p}]\n");
    let consumer = http_route(
        "web",
        "consumer",
        0,
        "  parentRefs: [{name: orders, namespace: shop}]\n  rules: [{name: c, timeouts: {request: 100ms}}]\n",
    );
    let routes = ServiceRoutes::compile(&service, &[producer, consumer.clone()], &[]);
    let decide = |namespace: &str| match routes.for_caller(80, namespace) {
        Some(RouteTable::Http(table)) => select(table, &request("GET /", &[])),
        other => format!("{other:?}"),
    };
    assert_eq!(decide("web"), "consumer/c");
    assert_eq!(decide("shop"), "producer/p");
    assert_eq!(decide("billing"), "producer/p");
    // Consumer routes alone leave other callers with the mesh's default.
    let routes = ServiceRoutes::compile(&service, &[consumer], &[]);
    assert!(routes.for_caller(80, "web").is_some());
    assert!(routes.for_caller(80, "billing").is_none());
}

/// A small vocabulary, so that generated routes and requests often meet.
const PATHS: [&str; 4] = ["/", "/a", "/a/b", "/c"];
const HEADERS: [(&str, &str); 2] = [("x-v", "1"), ("x-w", "2")];

#[derive(Debug, Clone)]
struct GeneratedMatch {
    path: (u8, usize),
    method: Option<bool>,
    headers: Vec<usize>,
}

fn generated_match() -> impl Strategy<Value = GeneratedMatch> {
    (
        (0u8..3, 0..PATHS.len()),
        proptest::option::of(any::<bool>()),
        proptest::sample::subsequence(vec![0usize, 1], 0..=2),
    )
        .prop_map(|(path, method, headers)| GeneratedMatch {
            path,
            method,
            headers,
        })
}

fn yaml(m: &GeneratedMatch) -> String {
    let kind = ["Exact", "PathPrefix", "RegularExpression"][usize::from(m.path.0)];
    let value = match m.path.0 {
        2 => format!("'{}.*'", PATHS[m.path.1]),
        _ => PATHS[m.path.1].to_owned(),
    };
    let method = match m.method {
        None => String::new(),
        Some(true) => ", method: GET".to_owned(),
        Some(false) => ", method: POST".to_owned(),
    };
    let headers: Vec<String> = m
        .headers
        .iter()
        .map(|i| format!("{{name: {}, value: '{}'}}", HEADERS[*i].0, HEADERS[*i].1))
        .collect();
    format!(
        "{{path: {{type: {kind}, value: {value}}}{method}, headers: [{}]}}",
        headers.join(", ")
    )
}

proptest! {
    /// The table chooses what the Gateway API's rules choose, computed directly: of
    /// every (route, rule, match) that matches, the one with the highest precedence,
    /// then the oldest route, the first name, the first rule.
    #[test]
    fn selection_agrees_with_the_precedence_rules_computed_directly(
        routes in proptest::collection::vec(
            (0u64..3, proptest::collection::vec(proptest::collection::vec(generated_match(), 1..3), 1..4)),
            1..4,
        ),
        path in 0..PATHS.len(),
        suffix in proptest::sample::select(vec!["", "/", "/x"]),
        get in any::<bool>(),
        headers in proptest::sample::subsequence(vec![0usize, 1], 0..=2),
    ) {
        let routes: Vec<Arc<HttpRoute>> = routes
            .iter()
            .enumerate()
            .map(|(i, (created, rules))| {
                let rules: String = rules
                    .iter()
                    .enumerate()
                    .map(|(j, matches)| {
                        let matches: Vec<String> = matches.iter().map(yaml).collect();
                        format!("  - {{name: rule{j}, matches: [{}]}}\n", matches.join(", "))
                    })
                    .collect();
                http_route("shop", &format!("route{i}"), *created, &format!("  rules:\n{rules}"))
            })
            .collect();
        let line = format!("{} {}{suffix}", if get { "GET" } else { "POST" }, PATHS[path]);
        let headers: Vec<(&str, &str)> = headers.iter().map(|i| HEADERS[*i]).collect();
        let request = request(&line, &headers);
        let view = request.view();

        let mut best: Option<(HttpPrecedence, u64, String, usize, String)> = None;
        for route in &routes {
            for (r, rule) in route.rules.iter().enumerate() {
                for m in &rule.matches {
                    if !m.matches(&view) {
                        continue;
                    }
                    let candidate = (
                        <HttpRule as RouteRule>::precedence(m),
                        route.creation_timestamp_ms,
                        route.name.to_string(),
                        r,
                        format!("{}/{}", route.name.name, rule.rule_name()),
                    );
                    let better = match &best {
                        None => true,
                        Some(b) => {
                            candidate.0 > b.0
                                || (candidate.0 == b.0
                                    && (candidate.1, &candidate.2, candidate.3) < (b.1, &b.2, b.3))
                        }
                    };
                    if better {
                        best = Some(candidate);
                    }
                }
            }
        }
        let expected = best.map_or("none".to_owned(), |b| b.4);
        prop_assert_eq!(select(&table(&routes), &request), expected);
    }
}
