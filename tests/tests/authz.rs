//! Authorization by identity end to end: real proxies with identities from join
//! tokens, STRICT mTLS between them, AuthorizationPolicy resources applied with
//! weftctl, and real clients (the harness's HTTP client, Python grpcio, raw TCP).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;

use weft_e2e::mesh::{
    http_app, identified_proxy, metric_value, raw_exchange, wait_for_identity, weftctl, weftctl_ok,
    ControlPlane, Proxy,
};
use weft_e2e::{free_port, grpc, http_get, loopback, promtool_check, wait_for};

const WAIT: std::time::Duration = std::time::Duration::from_secs(20);
const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const STRANGER: &str = "spiffe://cluster.local/ns/elsewhere/sa/stranger";

const MESH: &str = r#"
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{port: 80, protocol: http1}], mtls: STRICT}
---
kind: Service
metadata: {name: echo, namespace: shop}
spec: {ports: [{port: 90, protocol: grpc}], mtls: STRICT}
---
kind: Service
metadata: {name: store, namespace: shop}
spec: {ports: [{port: 70, protocol: tcp}], mtls: STRICT}
"#;

/// The frontend (namespace shop) may call everything, the stranger (namespace
/// elsewhere) nothing: by exact ID for web and store, by namespace for echo.
const POLICIES: &str = r#"
kind: AuthorizationPolicy
metadata: {name: web-callers, namespace: shop}
spec:
  service: web
  allow: [spiffe://cluster.local/ns/shop/sa/frontend]
---
kind: AuthorizationPolicy
metadata: {name: echo-callers, namespace: shop}
spec:
  service: shop/echo
  allow: [spiffe://cluster.local/ns/shop/*]
---
kind: AuthorizationPolicy
metadata: {name: store-callers, namespace: shop}
spec:
  service: store
  port: 70
  allow: [spiffe://cluster.local/ns/shop/sa/frontend]
  defaultAction: deny
"#;

fn authz_count(proxy: &Proxy, decision: &str, policy: &str) -> f64 {
    metric_value(
        &proxy.metrics(),
        &[
            &format!("weft_authz_{decision}_total{{"),
            &format!("policy=\"{policy}\""),
        ],
    )
    .unwrap_or(0.0)
}

/// A client proxy with one explicit listener per service.
struct Client {
    proxy: Proxy,
    web: SocketAddr,
    echo: SocketAddr,
    store: SocketAddr,
}

fn client(cp: &ControlPlane, dir: &Path, node_id: &str, identity: (&str, &str)) -> Client {
    let [web, echo, store] = [(); 3].map(|()| loopback(free_port()));
    let upstreams = [
        format!("shop/web={web}"),
        format!("shop/echo={echo}"),
        format!("shop/store={store}"),
    ];
    let mut extra = Vec::new();
    for upstream in &upstreams {
        extra.extend(["--upstream", upstream.as_str()]);
    }
    let proxy = identified_proxy(cp, dir, node_id, identity, None, &extra);
    Client {
        proxy,
        web,
        echo,
        store,
    }
}

#[test]
fn identities_are_allowed_or_denied_over_http_grpc_and_tcp_and_a_policy_update_applies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let script = grpc::script(path);

    let cp = ControlPlane::start(path, &path.join("data"), free_port(), &[]);
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(MESH));
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(POLICIES));

    let (web_app, _) = http_app("web-app");
    let (store_app, store_accepted) = http_app("store-app");
    let echo_app = grpc::app(&script, "python");
    let shop = |account| ("shop", account);
    let web = identified_proxy(&cp, path, "web-1", shop("web"), Some(("web", web_app)), &[]);
    let echo = identified_proxy(
        &cp,
        path,
        "echo-1",
        shop("echo"),
        Some(("echo", echo_app.addr)),
        &[],
    );
    let store = identified_proxy(
        &cp,
        path,
        "store-1",
        shop("store"),
        Some(("store", store_app)),
        &[],
    );
    let frontend = client(&cp, path, "frontend-1", shop("frontend"));
    let stranger = client(&cp, path, "stranger-1", ("elsewhere", "stranger"));
    for proxy in [&web, &echo, &store, &frontend.proxy, &stranger.proxy] {
        proxy.wait_ready();
    }
    for caller in [&frontend, &stranger] {
        for service in ["web", "echo", "store"] {
            wait_for_identity(
                &caller.proxy,
                &format!("shop/{service}"),
                &format!("spiffe://cluster.local/ns/shop/sa/{service}"),
            );
        }
    }

    // HTTP/1.1: 200 for the frontend, 403 for the stranger, from the server side.
    wait_for("the frontend to reach web over mTLS", WAIT, || {
        matches!(http_get(frontend.web, "/"), Ok((200, body)) if body == "web-app").then_some(())
    });
    let (status, body) = http_get(stranger.web, "/").expect("the stranger's request");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not authorized"), "{body}");

    // gRPC: the frontend's calls (unary, an error with trailing metadata, 2000
    // streamed messages) all cross the STRICT hop; the stranger's are refused
    // with PERMISSION_DENIED, in a trailers-only response.
    let echo_target = frontend.echo.to_string();
    let allowed = grpc::client(&script, &["client", &echo_target]);
    assert_eq!(allowed["unary"], "echo:hello", "{allowed}");
    assert_eq!(
        allowed["unary_trailers"]["x-served-by"], "python",
        "{allowed}"
    );
    assert_eq!(allowed["fail"]["code"], "NOT_FOUND", "{allowed}");
    assert_eq!(
        allowed["fail"]["trailers"]["x-reason"], "asked-to-fail",
        "{allowed}"
    );
    assert_eq!(allowed["stream_count"], 2000, "{allowed}");
    assert_eq!(allowed["stream_last"], "item-001999;", "{allowed}");
    let denied = grpc::client(&script, &["status", &stranger.echo.to_string()]);
    assert_eq!(denied["unary"], "PERMISSION_DENIED", "{denied}");
    assert_eq!(denied["stream"], "PERMISSION_DENIED", "{denied}");

    // TCP: the stranger's connection is closed before it reaches the app.
    wait_for("the frontend to reach store over mTLS", WAIT, || {
        raw_exchange(frontend.store)
            .ok()
            .filter(|answer| answer.ends_with("store-app"))
    });
    let accepted = store_accepted.load(Ordering::SeqCst);
    let answer = raw_exchange(stranger.store).unwrap_or_default();
    assert!(answer.is_empty(), "the stranger got an answer: {answer}");
    assert_eq!(store_accepted.load(Ordering::SeqCst), accepted);

    // Counted by policy on the protecting proxy.
    assert_eq!(authz_count(&web, "denied", "shop/web-callers"), 1.0);
    assert!(authz_count(&web, "allowed", "shop/web-callers") >= 1.0);
    assert_eq!(authz_count(&echo, "denied", "shop/echo-callers"), 2.0);
    assert!(authz_count(&echo, "allowed", "shop/echo-callers") >= 3.0);
    assert_eq!(authz_count(&store, "denied", "shop/store-callers"), 1.0);
    let metrics = web.metrics();
    assert!(
        metrics.contains(
            "weft_authz_denied_total{policy=\"shop/web-callers\",service=\"shop/web\"} 1"
        ),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, &["weft_request_errors_total", "error=\"denied\""]),
        Some(1.0)
    );
    promtool_check(&metrics);

    // Allowing the stranger applies to its next request.
    let opened = POLICIES.replace(
        "allow: [spiffe://cluster.local/ns/shop/sa/frontend]\n---",
        &format!("allow: [spiffe://cluster.local/ns/shop/sa/frontend, {STRANGER}]\n---"),
    );
    assert_ne!(opened, POLICIES);
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(&opened));
    wait_for("the updated policy to let the stranger in", WAIT, || {
        matches!(http_get(stranger.web, "/"), Ok((200, body)) if body == "web-app").then_some(())
    });
    // Counted as allowed now; the polling above may have been denied a few times.
    let denied = authz_count(&web, "denied", "shop/web-callers");
    let allowed = authz_count(&web, "allowed", "shop/web-callers");
    let (status, _) = http_get(stranger.web, "/").expect("the stranger's request");
    assert_eq!(status, 200);
    assert_eq!(authz_count(&web, "denied", "shop/web-callers"), denied);
    assert_eq!(
        authz_count(&web, "allowed", "shop/web-callers"),
        allowed + 1.0
    );
    // And deleting the last policy of a service opens it.
    weftctl_ok(
        &cp.address(),
        &["delete", "authz", "shop/store-callers"],
        None,
    );
    wait_for("store to open without its policy", WAIT, || {
        raw_exchange(stranger.store)
            .ok()
            .filter(|answer| answer.ends_with("store-app"))
    });
}

fn refused(cp: &ControlPlane, yaml: &str) -> String {
    let output = weftctl(&cp.address(), &["apply", "-f", "-"], Some(yaml));
    assert!(!output.status.success(), "accepted: {yaml}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn weftctl_applies_lists_and_refuses_policies_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let cp = ControlPlane::start(path, &path.join("data"), free_port(), &[]);
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(MESH));

    let bad_pattern = POLICIES.replace("ns/shop/*", "ns/sh*");
    let message = refused(&cp, &bad_pattern);
    assert!(message.contains("shop/echo-callers"), "{message}");
    assert!(message.contains("allow[0]"), "{message}");
    let unknown = POLICIES.replace("service: web", "service: website");
    let message = refused(&cp, &unknown);
    assert!(
        message.contains("service: service shop/website does not exist"),
        "{message}"
    );
    let bad_port = POLICIES.replace("port: 70", "port: 71");
    let message = refused(&cp, &bad_port);
    assert!(message.contains("port: 71 is not a port"), "{message}");
    let bad_default = POLICIES.replace("defaultAction: deny", "defaultAction: audit");
    let message = refused(&cp, &bad_default);
    assert!(message.contains("default_action"), "{message}");
    // Each refusal left the store as it was: the valid policies of those files
    // were not written either.
    let none = weftctl(&cp.address(), &["get", "authz"], None);
    assert!(none.status.success());
    assert!(String::from_utf8_lossy(&none.stdout).trim().is_empty());

    let applied = weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(POLICIES));
    assert!(
        applied.contains("authorizationpolicy/shop/web-callers created"),
        "{applied}"
    );
    let table = weftctl_ok(&cp.address(), &["get", "authz"], None);
    let row = table
        .lines()
        .find(|l| l.contains("store-callers"))
        .expect("a row for store-callers");
    let row: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(row[3..], ["shop/store", "70", FRONTEND, "deny"], "{table}");
    let yaml = weftctl_ok(
        &cp.address(),
        &[
            "get",
            "authorizationpolicy",
            "shop/web-callers",
            "-o",
            "yaml",
        ],
        None,
    );
    assert!(yaml.contains("service: shop/web"), "{yaml}");
    assert_eq!(
        weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(&yaml)),
        "authorizationpolicy/shop/web-callers unchanged\n"
    );
    weftctl_ok(
        &cp.address(),
        &["delete", "authz", "shop/web-callers"],
        None,
    );
    let table = weftctl_ok(&cp.address(), &["get", "authz"], None);
    assert!(!table.contains("web-callers"), "{table}");
}
