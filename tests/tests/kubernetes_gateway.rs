//! Routes on Kubernetes are the Gateway API's own HTTPRoute and GRPCRoute (GAMMA):
//! against a real kube-apiserver with the Gateway API's standard CRDs and Weft
//! installed from deploy/kubernetes/base, a route applied with kubectl reaches a meshed
//! proxy, and the control plane reports on it in `status.parents` as the Gateway API
//! asks: Accepted (or not, naming the field), ResolvedRefs, its own controller name,
//! and other controllers' entries left alone. And it steers traffic: the client pod's
//! requests reach the pod of `web` or of `web-v2` (each answers with its own name) as
//! the route's header match and weights say, the last good route still steering
//! while an invalid change is refused.

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use weft_e2e::kube::weft::{
    install, proxy_admin, sidecar, NAMED_APP_CONTAINER, SIDECAR_TOKEN_VOLUME,
};
use weft_e2e::kube::{install_gateway_api, Cluster, Images, Kubelet};
use weft_e2e::wait_for;

const TIMEOUT: Duration = Duration::from_secs(90);
const CONTROLLER: &str = "weft.io/mesh-controller";
const CONTROL_PLANE_SA: &str = "system:serviceaccount:weft:weft-control-plane";

/// The sidecar of the test's pods, as a container with its token volume; `extra`
/// adds arguments, each `, "--flag", "value"`.
fn proxy(control_plane: &str, extra: &str) -> String {
    format!(
        "      - name: weft-proxy{}{SIDECAR_TOKEN_VOLUME}\n",
        sidecar(control_plane, extra)
    )
}

/// A Deployment of one pod of Service `app`: a `weft-test-app` answering with its
/// pod's name, behind its sidecar on the Service's target port 15006.
fn backend(app: &str, control_plane: &str) -> String {
    let proxy = proxy(
        control_plane,
        r#", "--inbound", "0.0.0.0:15006", "--inbound-forward", "127.0.0.1:8080",
               "--workload-address", "$(POD_IP)""#,
    );
    format!(
        r#"---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {app}, namespace: shop}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {app}, namespace: shop}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {app}}}}}
  template:
    metadata: {{labels: {{app: {app}}}}}
    spec:
      serviceAccountName: {app}
      containers:
{NAMED_APP_CONTAINER}{proxy}"#
    )
}

/// Services `web` and `web-v2` with one pod each, and a meshed `client` pod whose
/// `/config_dump` shows what the control plane serves it and whose listener
/// 127.0.0.1:9080 is for `web`.
fn shop(control_plane: &str) -> String {
    let client = proxy(
        control_plane,
        r#", "--outbound", "127.0.0.1:15001", "--upstream", "shop/web:80=127.0.0.1:9080""#,
    );
    let backends = backend("web", control_plane) + &backend("web-v2", control_plane);
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: client, namespace: shop}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: 15006}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-v2, namespace: shop}}
spec:
  selector: {{app: web-v2}}
  ports: [{{name: http, port: 80, targetPort: 15006}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: client, namespace: shop}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: client}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      serviceAccountName: client
      containers:
{client}{backends}"#
    )
}

/// An HTTPRoute `web-split` attached to the Service web and to a Gateway (another
/// controller's business): requests with `x-canary: 1` go to web-v2, the others to
/// web and web-v2 by `weights`. `canary_path` is the path match of the canary rule.
fn split(canary_path: Value, weights: (u32, u32)) -> String {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web-split", "namespace": "shop"},
        "spec": {
            "parentRefs": [
                {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge", "sectionName": "https"},
                {"group": "", "kind": "Service", "name": "web", "port": 80},
            ],
            "rules": [
                {"matches": [{"path": canary_path, "headers": [{"name": "x-canary", "value": "1"}]}],
                 "backendRefs": [{"name": "web-v2", "port": 80}]},
                {"backendRefs": [
                    {"name": "web", "port": 80, "weight": weights.0},
                    {"name": "web-v2", "port": 80, "weight": weights.1},
                ]},
            ],
        },
    })
    .to_string()
}

fn route(cluster: &Cluster, name: &str) -> Value {
    let text = cluster.kubectl_ok(&["get", "httproute", name, "-n", "shop", "-o", "json"]);
    serde_json::from_str(&text).expect("a route as JSON")
}

/// Weft's condition `condition` of the route's Service parent: (status, reason,
/// message), once written for the route's current generation.
fn weft_condition(route: &Value, condition: &str) -> Option<(String, String, String)> {
    let generation = route["metadata"]["generation"].as_i64()?;
    let entry = route["status"]["parents"]
        .as_array()?
        .iter()
        .find(|p| p["controllerName"] == CONTROLLER && p["parentRef"]["kind"] == "Service")?;
    let found = entry["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == condition)?;
    (found["observedGeneration"].as_i64() == Some(generation)).then(|| {
        let text = |field: &str| found[field].as_str().unwrap_or_default().to_owned();
        (text("status"), text("reason"), text("message"))
    })
}

/// The route `name` as the client's proxy holds it (the document `weftctl apply`
/// reads), if it does.
fn held(kubelet: &Kubelet, client: &str, name: &str) -> Option<Value> {
    let dump = proxy_admin(kubelet, "shop", client, "/config_dump")?;
    let dump: Value = serde_json::from_str(&dump).ok()?;
    dump["resources"]["http_routes"]
        .as_array()?
        .iter()
        .find(|r| r["metadata"]["name"] == name)
        .cloned()
}

/// The body of the answer (the name of the pod that served it) to a GET the client
/// pod sends to its listener for `web`, with `headers`; `None` unless it is 2xx.
fn answer(kubelet: &Kubelet, client: &str, headers: &[&str]) -> Option<String> {
    let mut curl = kubelet.pod_command("shop", client, "curl");
    curl.args(["-sf", "--max-time", "5"]);
    for header in headers {
        curl.args(["-H", header]);
    }
    let output = curl.arg("http://127.0.0.1:9080/").output().ok()?;
    let body = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    output.status.success().then_some(body)
}

/// The one ready pod of Deployment `app`.
fn pod_of(kubelet: &Kubelet, app: &str) -> String {
    // `web-` also names web-v2's pods: a Deployment's pod is `<app>-<hash>-<suffix>`.
    let ours = |name: &str| {
        name.strip_prefix(app)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|rest| rest.matches('-').count() == 1)
    };
    wait_for(&format!("a ready {app} pod"), TIMEOUT, || {
        let pods = kubelet.pods_named("shop", &format!("{app}-"));
        let pod = pods.into_iter().find(|p| p.ready && ours(&p.name))?;
        Some(pod.name)
    })
}

/// Waits until requests with `headers` reach pod `expected`, then checks that five
/// in a row do.
fn steered(kubelet: &Kubelet, client: &str, headers: &[&str], expected: &str) {
    wait_for(&format!("{headers:?} to reach {expected}"), TIMEOUT, || {
        (answer(kubelet, client, headers).as_deref() == Some(expected)).then_some(())
    });
    for _ in 0..5 {
        let served = answer(kubelet, client, headers);
        assert_eq!(served.as_deref(), Some(expected), "{headers:?}");
    }
}

/// `weftctl apply -f -` of `document` against one control-plane replica, from the LAN.
fn weftctl_apply(kubelet: &Kubelet, replica: &str, document: &str) -> Output {
    let mut child = kubelet
        .client_netns()
        .command(weft_e2e::bin("weftctl"))
        .args(["--control-plane", replica, "apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run weftctl");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(document.as_bytes()).expect("feed weftctl");
    }
    child.wait_with_output().expect("run weftctl")
}

#[test]
fn gateway_api_routes_reach_the_proxies_and_get_a_status() {
    let cluster = Cluster::start();
    let kubelet = Kubelet::start(&cluster, Images::workspace());
    install_gateway_api(&cluster);
    install(&cluster);
    for allowed in [
        &[
            "watch",
            "httproutes.gateway.networking.k8s.io",
            "--all-namespaces",
        ][..],
        &[
            "list",
            "grpcroutes.gateway.networking.k8s.io",
            "--all-namespaces",
        ],
        &[
            "patch",
            "httproutes.gateway.networking.k8s.io",
            "--subresource=status",
            "-n",
            "shop",
        ],
        &[
            "update",
            "grpcroutes.gateway.networking.k8s.io",
            "--subresource=status",
            "-n",
            "shop",
        ],
    ] {
        let mut args = vec!["auth", "can-i", "--as", CONTROL_PLANE_SA];
        args.extend_from_slice(allowed);
        let output = cluster.kubectl(&args);
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "yes",
            "should be allowed: {allowed:?}"
        );
    }
    // Read only: kubectl writes routes, not the control plane.
    let refused = cluster.kubectl(&[
        "auth",
        "can-i",
        "--as",
        CONTROL_PLANE_SA,
        "patch",
        "httproutes.gateway.networking.k8s.io",
        "-n",
        "shop",
    ]);
    assert_eq!(String::from_utf8_lossy(&refused.stdout).trim(), "no");
    // Read only: kubectl writes routes, not the control plane.
    let mut args = vec!["auth", "can-i", "--as", CONTROL_PLANE_SA];
    args.extend_from_slice(&[
        "patch",
        "httproutes.gateway.networking.k8s.io",
        "-n",
        "shop",
    ]);
    let output = cluster.kubectl(&args);
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "no");
    let replicas = kubelet.wait_ready_named("weft", "weft-control-plane-", 2, TIMEOUT);
    let addresses: Vec<String> = replicas.iter().map(|p| format!("{}:15010", p.ip)).collect();
    cluster.apply(&shop(&addresses.join(",")));
    let client = wait_for("a ready client pod", TIMEOUT, || {
        kubelet
            .pods_named("shop", "client-")
            .into_iter()
            .find(|p| p.ready)
    });

    // A valid route: accepted by Weft's controller, and served to the client's proxy
    // with the Gateway parent left out.
    cluster.apply(&split(json!({"type": "PathPrefix", "value": "/"}), (1, 0)));
    wait_for("web-split Accepted by Weft", TIMEOUT, || {
        let route = route(&cluster, "web-split");
        let accepted = weft_condition(&route, "Accepted")?;
        let resolved = weft_condition(&route, "ResolvedRefs")?;
        (accepted.0 == "True" && resolved.0 == "True").then_some(())
    });
    let served = wait_for("web-split in the client's proxy", TIMEOUT, || {
        held(&kubelet, &client.name, "web-split")
    });
    let spec = &served["spec"];
    assert_eq!(
        spec["parentRefs"].as_array().map(Vec::len),
        Some(1),
        "{served}"
    );
    assert_eq!(spec["parentRefs"][0]["name"], "web", "{served}");
    assert_eq!(
        spec["rules"][0]["backendRefs"][0]["name"], "web-v2",
        "{served}"
    );
    assert!(
        served["metadata"]["creationTimestamp"].is_string(),
        "the object's creation time orders ties: {served}"
    );

    // The route steers the client's requests between the two pods: the canary
    // header to web-v2's, the rest to web's; then, weights 0/100, all to web-v2's.
    let (web, v2) = (pod_of(&kubelet, "web"), pod_of(&kubelet, "web-v2"));
    steered(&kubelet, &client.name, &["x-canary: 1"], &v2);
    steered(&kubelet, &client.name, &[], &web);
    cluster.apply(&split(json!({"type": "PathPrefix", "value": "/"}), (0, 1)));
    steered(&kubelet, &client.name, &[], &v2);

    // weftctl apply of a route is refused, pointing at kubectl: the objects are the
    // Gateway API's.
    let refused = weftctl_apply(
        &kubelet,
        &addresses[0],
        "kind: HTTPRoute\nmetadata: {name: by-weftctl, namespace: shop}\nspec:\n  parentRefs: [{name: web}]\n  rules: [{backendRefs: [{name: web}]}]\n",
    );
    assert!(
        !refused.status.success(),
        "weftctl apply of a route should fail"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("the Gateway API's own objects") && stderr.contains("kubectl"),
        "{stderr}"
    );

    // Another controller's entry in status.parents (the Gateway's) is left alone.
    let theirs = json!({
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge", "sectionName": "https"},
        "controllerName": "example.com/gateway-controller",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}],
    });
    cluster.kubectl_ok(&[
        "patch",
        "httproute",
        "web-split",
        "-n",
        "shop",
        "--subresource=status",
        "--type=json",
        "-p",
        &json!([{"op": "add", "path": "/status/parents/-", "value": theirs}]).to_string(),
    ]);

    // An invalid change (a regular expression that does not compile) is refused with
    // the field named; the proxy keeps the last good route.
    cluster.apply(&split(
        json!({"type": "RegularExpression", "value": "/(unclosed"}),
        (1, 0),
    ));
    let (_, reason, message) = wait_for("web-split not Accepted", TIMEOUT, || {
        weft_condition(&route(&cluster, "web-split"), "Accepted").filter(|c| c.0 == "False")
    });
    assert_eq!(reason, "UnsupportedValue");
    assert!(
        message.contains("spec.rules[0].matches[0].path"),
        "{message}"
    );
    let route_now = route(&cluster, "web-split");
    let parents = route_now["status"]["parents"].as_array().expect("parents");
    assert!(
        parents.contains(&theirs),
        "the other controller's entry is kept: {parents:?}"
    );
    let still = held(&kubelet, &client.name, "web-split").expect("web-split held");
    // The last good route still serves: its canary match is the header alone (the
    // default path, PathPrefix /, is left out), not the regular expression.
    let canary = &still["spec"]["rules"][0]["matches"][0];
    assert_eq!(canary["headers"][0]["name"], "x-canary", "{still}");
    assert!(canary["path"].is_null(), "{still}");
    // And it still steers: weights 0/100.
    steered(&kubelet, &client.name, &[], &v2);

    // A route of Gateways only is not the mesh's: no entry of Weft's, nothing served.
    // It is applied before the next one: one watch delivers both in order, so once
    // the proxy holds the next, the control plane had read this one.
    cluster.apply(
        &json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "edge-only", "namespace": "shop"},
            "spec": {
                "parentRefs": [{"name": "edge"}],
                "rules": [{"backendRefs": [{"name": "web", "port": 80}]}],
            },
        })
        .to_string(),
    );

    // A backend that does not exist: accepted, but its references are not resolved.
    cluster.apply(
        &json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "to-nowhere", "namespace": "shop"},
            "spec": {
                "parentRefs": [{"group": "", "kind": "Service", "name": "web"}],
                "rules": [{"backendRefs": [{"name": "nowhere", "port": 80}]}],
            },
        })
        .to_string(),
    );
    let (status, reason, message) = wait_for("to-nowhere ResolvedRefs", TIMEOUT, || {
        weft_condition(&route(&cluster, "to-nowhere"), "ResolvedRefs")
    });
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "BackendNotFound")
    );
    assert!(message.contains("shop/nowhere"), "{message}");
    let accepted = weft_condition(&route(&cluster, "to-nowhere"), "Accepted").expect("Accepted");
    assert_eq!(accepted.0, "True");
    wait_for("to-nowhere in the client's proxy", TIMEOUT, || {
        held(&kubelet, &client.name, "to-nowhere")
    });
    assert!(held(&kubelet, &client.name, "edge-only").is_none());
    let edge_only = route(&cluster, "edge-only");
    assert!(
        edge_only["status"]["parents"]
            .as_array()
            .is_none_or(|p| p.iter().all(|e| e["controllerName"] != CONTROLLER)),
        "{edge_only}"
    );
}
