use super::*;

const EXAMPLE: &str = r#"
kind: Service
metadata: {name: orders, namespace: shop}
spec:
  ports:
  - {name: http, port: 80, protocol: http1}
  - {name: grpc, port: 9090, protocol: grpc}
  virtualIPs: [10.96.0.10]
  hostnames: [orders.shop]
  loadBalancer: round_robin
  mtls: STRICT
---
kind: Endpoints
metadata: {name: orders, namespace: shop}
spec:
  endpoints:
  - address: 10.0.0.5
    port: 8080
    portName: http
    weight: 3
    locality: {region: eu-west, zone: eu-west-1a}
    labels: {version: v2}
    health: unhealthy
    identity: spiffe://cluster.local/ns/shop/sa/orders
"#;

fn parse_error(text: &str) -> (usize, String) {
    match parse(text) {
        Err(ParseError::Document { document, message }) => (document, message),
        other => panic!("expected a document error, got {other:?}"),
    }
}

#[test]
fn several_documents_map_to_their_messages() {
    let documents = parse(EXAMPLE).expect("parse");
    assert_eq!(documents.len(), 2);
    let Document::Service(service) = &documents[0] else {
        panic!("first document is not a service");
    };
    assert_eq!(
        service.to_proto(),
        v1::Service {
            namespace: "shop".into(),
            name: "orders".into(),
            ports: vec![
                v1::ServicePort {
                    name: "http".into(),
                    port: 80,
                    protocol: "http1".into()
                },
                v1::ServicePort {
                    name: "grpc".into(),
                    port: 9090,
                    protocol: "grpc".into()
                },
            ],
            virtual_ips: vec!["10.96.0.10".into()],
            hostnames: vec!["orders.shop".into()],
            load_balancer: "round_robin".into(),
            mtls: "STRICT".into(),
            ..Default::default()
        }
    );
    let Document::Endpoints(endpoints) = &documents[1] else {
        panic!("second document is not endpoints");
    };
    assert_eq!(
        endpoints.to_proto(),
        v1::Endpoints {
            namespace: "shop".into(),
            name: "orders".into(),
            endpoints: vec![v1::Endpoint {
                address: "10.0.0.5".into(),
                port: 8080,
                port_name: "http".into(),
                weight: 3,
                locality: Some(v1::Locality {
                    region: "eu-west".into(),
                    zone: "eu-west-1a".into()
                }),
                labels: [("version".to_owned(), "v2".to_owned())].into(),
                health: "unhealthy".into(),
                identity: "spiffe://cluster.local/ns/shop/sa/orders".into(),
            }],
        }
    );
}

#[test]
fn resources_carry_the_type_url_and_the_full_name() {
    let documents = parse(EXAMPLE).expect("parse");
    let resource = documents[1].to_resource();
    assert_eq!(resource.name, "shop/orders");
    assert_eq!(resource.version, 0);
    let body = resource.body.expect("body");
    assert_eq!(body.type_url, Kind::Endpoints.type_url());
    let Document::Endpoints(endpoints) = &documents[1] else {
        panic!("not endpoints");
    };
    assert_eq!(
        <v1::Endpoints as prost::Message>::decode(body.value.as_slice()).expect("decode"),
        endpoints.to_proto()
    );
}

#[test]
fn omitted_fields_take_the_defaults_left_to_the_server() {
    let documents = parse(
        "kind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80, protocol: tcp}]\n",
    )
    .expect("parse");
    let Document::Service(service) = &documents[0] else {
        panic!("not a service");
    };
    let message = service.to_proto();
    assert_eq!(message.namespace, DEFAULT_NAMESPACE);
    assert_eq!(
        message.load_balancer, "",
        "empty means p2c_ewma server-side"
    );
    assert_eq!(message.ports[0].name, "");
    assert!(message.virtual_ips.is_empty() && message.hostnames.is_empty());

    let documents = parse(
        "kind: Endpoints\nmetadata: {name: web}\nspec:\n  endpoints: [{address: 10.0.0.1, port: 80}]\n",
    )
    .expect("parse");
    let Document::Endpoints(endpoints) = &documents[0] else {
        panic!("not endpoints");
    };
    let endpoint = &endpoints.to_proto().endpoints[0];
    assert_eq!(
        (
            endpoint.weight,
            endpoint.health.as_str(),
            &endpoint.locality
        ),
        (0, "", &None)
    );
}

#[test]
fn values_are_left_for_the_server_to_validate() {
    let documents = parse(
        "kind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 0, protocol: smtp}]\n",
    )
    .expect("out-of-range values are the server's to reject, not the parser's");
    let Document::Service(service) = &documents[0] else {
        panic!("not a service");
    };
    assert_eq!(service.to_proto().ports[0].port, 0);
    assert_eq!(service.to_proto().ports[0].protocol, "smtp");
}

#[test]
fn unknown_fields_name_the_document_and_the_field() {
    let text = format!("{EXAMPLE}---\nkind: Service\nmetadata: {{name: a}}\nspec:\n  ports:\n  - {{port: 80, protocl: tcp}}\n");
    let (document, message) = parse_error(&text);
    assert_eq!(document, 3);
    assert!(message.contains("protocl"), "{message}");
    assert!(message.contains("spec.ports[0]"), "{message}");
    assert!(message.contains("line 30"), "line in the file: {message}");

    let (document, message) =
        parse_error("kind: Endpoints\nmetadata: {name: a, labels: {}}\nspec: {}\n");
    assert_eq!(document, 1);
    assert!(
        message.contains("metadata") && message.contains("labels"),
        "{message}"
    );

    let (_, message) = parse_error("kind: Service\nmetadata: {name: a}\nspec: {}\nstatus: {}\n");
    assert!(message.contains("status"), "{message}");
}

#[test]
fn unknown_or_missing_kind_names_the_document() {
    let (document, message) = parse_error(
        "kind: Service\nmetadata: {name: a}\nspec: {}\n---\nkind: Route\nmetadata: {name: a}\n",
    );
    assert_eq!(document, 2);
    assert!(message.contains("\"Route\""), "{message}");
    assert!(message.contains("Service or Endpoints"), "{message}");

    let (document, message) = parse_error("metadata: {name: a}\n");
    assert_eq!(document, 1);
    assert!(message.contains("kind"), "{message}");

    let (_, message) = parse_error("- a\n- b\n");
    assert!(message.contains("mapping"), "{message}");
}

#[test]
fn syntax_errors_name_the_document() {
    let (document, message) = parse_error("kind: Service\n---\nkind: [\n");
    assert_eq!(document, 2);
    assert!(message.contains("line"), "{message}");
}

#[test]
fn empty_documents_are_skipped_but_counted() {
    // A leading `---` opens the first document rather than ending an empty one.
    let text = "---\nkind: Service\nmetadata: {name: a}\nspec: {}\n---\n---\nkind: Nope\n";
    let (document, _) = parse_error(text);
    assert_eq!(document, 3);
    assert_eq!(parse(""), Err(ParseError::Empty));
    assert_eq!(parse("---\n---\n"), Err(ParseError::Empty));
}

#[test]
fn stored_resources_print_as_documents_that_parse_back_to_the_same_messages() {
    let documents = parse(EXAMPLE).expect("parse");
    let stored: Vec<v1::Resource> = documents
        .iter()
        .map(|d| v1::Resource {
            version: 7,
            ..d.to_resource()
        })
        .collect();
    let printed: Vec<Document> = stored
        .iter()
        .map(|r| Document::from_resource(r).expect("from resource"))
        .collect();
    assert_eq!(printed[0].metadata().version, Some(7));
    let yaml = to_yaml(&printed).expect("yaml");
    let reparsed = parse(&yaml).expect("the printed YAML parses");
    let resent: Vec<v1::Resource> = reparsed.iter().map(Document::to_resource).collect();
    let original: Vec<v1::Resource> = documents.iter().map(Document::to_resource).collect();
    assert_eq!(resent, original);
}

#[test]
fn printed_yaml_is_the_apply_format() {
    let service = v1::Service {
        namespace: "shop".into(),
        name: "orders".into(),
        ports: vec![v1::ServicePort {
            name: "http".into(),
            port: 80,
            protocol: "http1".into(),
        }],
        virtual_ips: vec!["10.96.0.10".into()],
        hostnames: vec![],
        load_balancer: "p2c_ewma".into(),
        mtls: String::new(),
        ..Default::default()
    };
    let endpoints = v1::Endpoints {
        namespace: "shop".into(),
        name: "orders".into(),
        endpoints: vec![v1::Endpoint {
            address: "10.0.0.5".into(),
            port: 8080,
            port_name: String::new(),
            weight: 1,
            // As stored: the server keeps an empty locality, which is not printed.
            locality: Some(v1::Locality::default()),
            labels: Default::default(),
            health: "healthy".into(),
            identity: String::new(),
        }],
    };
    let yaml = to_yaml(&[
        Document::Service(ServiceDocument::from_proto(&service, Some(3))),
        Document::Endpoints(EndpointsDocument::from_proto(&endpoints, Some(4))),
    ])
    .expect("yaml");
    assert_eq!(
        yaml,
        "kind: Service
metadata:
  name: orders
  namespace: shop
  version: 3
spec:
  ports:
  - name: http
    port: 80
    protocol: http1
  virtualIPs:
  - 10.96.0.10
  loadBalancer: p2c_ewma
---
kind: Endpoints
metadata:
  name: orders
  namespace: shop
  version: 4
spec:
  endpoints:
  - address: 10.0.0.5
    port: 8080
    weight: 1
    health: healthy
"
    );
}

#[test]
fn json_has_the_same_structure() {
    let documents = parse(EXAMPLE).expect("parse");
    let json = serde_json::to_value(&documents[0]).expect("json");
    assert_eq!(json["kind"], "Service");
    assert_eq!(json["metadata"]["namespace"], "shop");
    assert_eq!(json["spec"]["virtualIPs"][0], "10.96.0.10");
    assert_eq!(json["spec"]["loadBalancer"], "round_robin");
    let text = serde_json::to_string(&documents[0]).expect("json text");
    assert_eq!(parse(&text).expect("JSON is YAML"), documents[..1]);
}

#[test]
fn resilience_sections_map_to_their_messages_and_back() {
    let text = "kind: Service
metadata: {name: web}
spec:
  ports: [{port: 80, protocol: http1}]
  timeouts: {connectMs: 500, requestMs: 2000}
  retries: {retryOn: [5xx], maxRetries: 0, budgetPercent: 10}
  outlierDetection: {consecutiveFailures: 0, failurePercentageThreshold: 50}
  circuitBreakers: {maxRequests: 10}
  locality: {minHealthyPercent: 50, failover: [us-east]}
";
    let documents = parse(text).expect("parse");
    let Document::Service(service) = &documents[0] else {
        panic!("not a service");
    };
    let message = service.to_proto();
    assert_eq!(message.timeouts.as_ref().map(|t| t.request_ms), Some(2000));
    let retries = message.retries.as_ref().expect("retries");
    assert_eq!(
        (retries.max_retries, retries.budget_percent),
        (Some(0), Some(10))
    );
    assert_eq!(
        message
            .outlier_detection
            .as_ref()
            .map(|o| o.consecutive_failures),
        Some(Some(0))
    );
    assert_eq!(
        message.circuit_breakers.as_ref().map(|c| c.max_requests),
        Some(10)
    );
    assert_eq!(
        message.locality.as_ref().map(|l| l.failover.clone()),
        Some(vec!["us-east".to_owned()])
    );
    let back = ServiceDocument::from_proto(&message, None);
    assert_eq!(back.spec, service.spec);
    assert!(parse(&text.replace("maxRequests", "maxRequest")).is_err());
}

#[test]
fn a_health_check_maps_to_its_message_and_back() {
    let text = r#"
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{port: 80, protocol: http1}]
  healthCheck:
    http: {path: /health, expectedStatus: 204}
    intervalMs: 500
    unhealthyThreshold: 2
"#;
    let documents = parse(text).expect("parse");
    let Document::Service(service) = &documents[0] else {
        panic!("not a service");
    };
    let message = service.to_proto();
    let check = message.health_check.clone().expect("health check");
    assert_eq!(
        check.http,
        Some(v1::HttpHealthCheck {
            path: "/health".into(),
            expected_status: 204
        })
    );
    assert_eq!((check.interval_ms, check.unhealthy_threshold), (500, 2));
    let model = crate::model::Service::try_from(&message).expect("valid");
    assert_eq!(
        model.health_check.map(|c| c.interval),
        Some(std::time::Duration::from_millis(500))
    );
    assert_eq!(
        ServiceDocument::from_proto(&message, None).to_proto(),
        message
    );
    let (_, error) =
        parse_error("kind: Service\nmetadata: {name: web}\nspec:\n  healthCheck: {exec: {}}\n");
    assert!(error.contains("exec"), "{error}");
}

#[test]
fn authorization_policies_round_trip_through_yaml() {
    let text = r#"
kind: AuthorizationPolicy
metadata: {name: orders-callers, namespace: shop}
spec:
  service: shop/orders
  port: 8080
  allow: [spiffe://cluster.local/ns/shop/sa/web, spiffe://cluster.local/ns/billing/*]
  defaultAction: allow
"#;
    let documents = parse(text).expect("parse");
    let Document::AuthorizationPolicy(policy) = &documents[0] else {
        panic!("not a policy: {documents:?}");
    };
    let message = policy.to_proto();
    assert_eq!(message.service, "shop/orders");
    assert_eq!(message.port, 8080);
    assert_eq!(message.allow.len(), 2);
    assert_eq!(message.default_action, "allow");
    let resource = documents[0].to_resource();
    assert_eq!(resource.name, "shop/orders-callers");
    let back = Document::from_resource(&resource).expect("document");
    let reparsed = parse(&to_yaml(&[back]).expect("yaml")).expect("parse");
    assert_eq!(reparsed[0].to_resource(), resource);
    let (_, message) = parse_error(
        "kind: AuthorizationPolicy\nmetadata: {name: p}\nspec: {service: orders, allowed: []}\n",
    );
    assert!(message.contains("allowed"), "{message}");
}

const ROUTES: &str = r#"
kind: HTTPRoute
metadata: {name: orders-split, namespace: shop}
spec:
  parentRefs: [{group: core, kind: Service, name: orders, port: 80}]
  hostnames: [orders.shop]
  rules:
  - name: canary
    matches:
    - path: {type: PathPrefix, value: /api}
      headers: [{name: x-canary, value: "1"}]
      queryParams: [{type: RegularExpression, name: v, value: "[0-9]+"}]
      method: GET
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-route, value: canary}], remove: [x-debug]}
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow}, percent: 5}
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    - type: weft.io/Fault
      fault: {delay: {fixedDelay: 50ms, percent: 10}, abort: {httpStatus: 503}}
    - type: weft.io/LocalRateLimit
      localRateLimit: {requestsPerUnit: 10, unit: second}
    backendRefs:
    - {name: orders-v1, weight: 90}
    - {name: orders-v2, port: 8080, weight: 10}
    timeouts: {request: 90s, backendRequest: 500ms}
    retry: {codes: [503], attempts: 2, backoff: 25ms}
  - backendRefs: [{name: orders-v1}]
---
kind: GRPCRoute
metadata: {name: payments, namespace: shop}
spec:
  parentRefs: [{name: payments}]
  rules:
  - matches:
    - method: {service: shop.Payments, method: Refund}
      headers: [{name: x-tenant, value: a}]
    filters:
    - type: weft.io/Fault
      fault: {abort: {grpcStatus: UNAVAILABLE, percent: 1}}
    backendRefs: [{name: payments-v2}]
    retry: {codes: [UNAVAILABLE], attempts: 1}
  - {}
"#;

#[test]
fn routes_map_to_their_messages_and_back() {
    let documents = parse(ROUTES).expect("parse");
    let Document::HttpRoute(route) = &documents[0] else {
        panic!("not an HTTPRoute: {:?}", documents[0]);
    };
    let message = route.to_proto();
    assert_eq!(message.parent_refs[0].group, "core");
    assert_eq!(message.parent_refs[0].port, 80);
    let rule = &message.rules[0];
    assert_eq!(rule.matches[0].query_params[0].r#type, "RegularExpression");
    assert_eq!(rule.filters[3].r#type, "weft.io/Fault");
    assert_eq!(rule.backend_refs[1].weight, Some(10));
    assert_eq!(rule.backend_refs[1].port, 8080);
    assert_eq!(message.rules[1].backend_refs[0].weight, None);
    assert_eq!(HttpRouteDocument::from_proto(&message, None), *route);
    let Document::GrpcRoute(grpc) = &documents[1] else {
        panic!("not a GRPCRoute");
    };
    assert_eq!(GrpcRouteDocument::from_proto(&grpc.to_proto(), None), *grpc);
}

#[test]
fn stored_routes_print_in_canonical_form_and_apply_unchanged() {
    // What the control plane stores is the validated route re-encoded; printing it
    // and applying the print must give the same bytes (`get -o yaml | apply` is
    // `unchanged`).
    for document in parse(ROUTES).expect("parse") {
        let body = crate::resource::decode_resource(&document.to_resource()).expect("valid");
        let mut stored = v1::Resource {
            name: document.name(),
            version: 3,
            body: Some(body.to_any()),
        };
        if let Some(any) = stored.body.as_mut() {
            // As the control plane stamps a new route.
            match document.kind() {
                Kind::HttpRoute => {
                    let mut m = <v1::HttpRoute as prost::Message>::decode(any.value.as_slice())
                        .expect("decode");
                    m.creation_timestamp_ms = 1_700_000_000_000;
                    any.value = prost::Message::encode_to_vec(&m);
                }
                _ => {
                    let mut m = <v1::GrpcRoute as prost::Message>::decode(any.value.as_slice())
                        .expect("decode");
                    m.creation_timestamp_ms = 1_700_000_000_000;
                    any.value = prost::Message::encode_to_vec(&m);
                }
            }
        }
        let printed = Document::from_resource(&stored).expect("document");
        assert_eq!(
            printed.metadata().creation_timestamp.as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        let yaml = to_yaml(std::slice::from_ref(&printed)).expect("yaml");
        let reapplied = parse(&yaml).expect("the print parses").remove(0);
        let again = crate::resource::decode_resource(&reapplied.to_resource()).expect("valid");
        assert_eq!(again.encode(), body.encode(), "{yaml}");
    }
    // The canonical form: durations as the GEP prints them, defaults left out.
    let body = crate::resource::decode_resource(&parse(ROUTES).expect("parse")[0].to_resource())
        .expect("valid");
    let printed = Document::from_resource(&v1::Resource {
        name: "shop/orders-split".into(),
        version: 1,
        body: Some(body.to_any()),
    })
    .expect("document");
    let yaml = to_yaml(&[printed]).expect("yaml");
    assert!(yaml.contains("request: 1m30s"), "{yaml}");
    assert!(!yaml.contains("group"), "{yaml}");
}

#[test]
fn route_documents_refuse_unknown_fields_by_name() {
    let (_, message) = parse_error(
        "kind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: o}]\n  rules:\n  - matches: [{path: {value: /}, hostname: x}]\n",
    );
    assert!(
        message.contains("hostname") && message.contains("spec.rules[0].matches[0]"),
        "{message}"
    );
    let (_, message) =
        parse_error("kind: GRPCRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: o}]\n  rules: [{matches: [{method: {service: a, verb: b}}]}]\n");
    assert!(message.contains("verb"), "{message}");
}
