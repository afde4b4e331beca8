//! Weft on Kubernetes, against a real kube-apiserver and kube-controller-manager with
//! only the kubelet played (weft_e2e::kube): the manifests of deploy/kubernetes/base
//! applied as an operator would, the control plane run from its Deployment (two
//! replicas, in-cluster credentials, its own RBAC), sidecars that prove who they are
//! with projected ServiceAccount tokens, and endpoints from the real EndpointSlice
//! controller.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use weft_e2e::kube::weft::{proxy_admin, sidecar, SIDECAR_TOKEN_VOLUME};
use weft_e2e::kube::{Cluster, Images, Kubelet};
use weft_e2e::load::{Load, Options};
use weft_e2e::mesh::csr;
use weft_e2e::netns;
use weft_e2e::wait_for;
use weft_proto::v1;
use weft_proto::v1::identity_client::IdentityClient;

const TIMEOUT: Duration = Duration::from_secs(90);
const CONTROL_PLANE_SA: &str = "system:serviceaccount:weft:weft-control-plane";

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/base")
}

/// Applies the base and waits until its CRDs are established.
fn install(cluster: &Cluster) {
    let base = base();
    let out = cluster.kubectl_ok(&["apply", "-k", base.to_str().expect("utf-8 path")]);
    assert!(out.contains("customresourcedefinition"), "{out}");
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/servicepolicies.weft.io",
        "crd/authorizationpolicies.weft.io",
    ]);
}

fn can_i(cluster: &Cluster, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i", "--as", CONTROL_PLANE_SA];
    all.extend_from_slice(args);
    let output = cluster.kubectl(&all);
    String::from_utf8_lossy(&output.stdout).trim() == "yes"
}

#[test]
fn the_manifests_apply_and_grant_exactly_what_the_control_plane_needs() {
    let cluster = Cluster::start();
    install(&cluster);
    for allowed in [
        &["list", "services", "--all-namespaces"][..],
        &[
            "watch",
            "endpointslices.discovery.k8s.io",
            "--all-namespaces",
        ],
        &["watch", "pods", "--all-namespaces"],
        &["watch", "servicepolicies.weft.io", "--all-namespaces"],
        &["patch", "servicepolicies.weft.io/status", "-n", "shop"],
        &["create", "authorizationpolicies.weft.io", "-n", "shop"],
        &["create", "tokenreviews.authentication.k8s.io"],
        &["update", "leases.coordination.k8s.io", "-n", "weft"],
        &["create", "secrets", "-n", "weft"],
        &["get", "secrets/weft-ca", "-n", "weft"],
    ] {
        assert!(can_i(&cluster, allowed), "should be allowed: {allowed:?}");
    }
    for refused in [
        &["get", "secrets", "-n", "default"][..],
        &["get", "secrets/other", "-n", "weft"],
        &["list", "secrets", "-n", "weft"],
        &["create", "pods/exec", "-n", "shop"],
        &["delete", "services", "-n", "shop"],
        &["create", "pods", "-n", "weft"],
        &["update", "leases.coordination.k8s.io", "-n", "default"],
        &["patch", "deployments.apps", "-n", "weft"],
    ] {
        assert!(!can_i(&cluster, refused), "should be refused: {refused:?}");
    }
}

/// The shop: a Service `web` of two meshed replicas (the app behind a native-sidecar
/// weft-proxy that takes inbound traffic on 15006), and a `client` pod whose proxy
/// exposes `shop/web:80` on 127.0.0.1:9080. Both identities come from projected
/// ServiceAccount tokens for the audience `weft`.
fn shop(control_plane: &str) -> String {
    let proxy = |extra: &str| sidecar(control_plane, extra);
    let token_volume = SIDECAR_TOKEN_VOLUME;
    let server_proxy = proxy(
        r#", "--inbound", "0.0.0.0:15006", "--inbound-forward", "127.0.0.1:8080",
               "--service", "web", "--workload-address", "$(POD_IP)", "--workload-port", "http=15006",
               "--outbound", "127.0.0.1:15001""#,
    );
    let client_proxy =
        proxy(r#", "--outbound", "127.0.0.1:15001", "--upstream", "shop/web:80=127.0.0.1:9080""#);
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: web, namespace: shop}}
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
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: shop}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      serviceAccountName: web
      terminationGracePeriodSeconds: 5
      initContainers:
      - name: weft-proxy
        restartPolicy: Always{server_proxy}
      containers:
      - name: app
        image: weft-test-app
        args: ["--listen", "127.0.0.1:8080", "--name", "$(POD_NAME)"]
        env:
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}{token_volume}
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
      - name: weft-proxy{client_proxy}{token_volume}
"#
    )
}

/// `weftctl` against one control-plane replica, from the LAN.
fn weftctl(kubelet: &Kubelet, replica: &str, args: &[&str]) -> String {
    weftctl_with(kubelet, replica, args, "")
}

/// [`weftctl`] with `input` on its standard input.
fn weftctl_with(kubelet: &Kubelet, replica: &str, args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = kubelet
        .client_netns()
        .command(weft_e2e::bin("weftctl"))
        .args(["--control-plane", replica])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run weftctl");
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .expect("write weftctl's input");
    }
    let output = child.wait_with_output().expect("run weftctl");
    assert!(
        output.status.success(),
        "weftctl {args:?} against {replica} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn condition(cluster: &Cluster, resource: &str) -> String {
    let output = cluster.kubectl(&[
        "get",
        resource,
        "-n",
        "shop",
        "-o",
        r#"jsonpath={.status.conditions[?(@.type=="Accepted")].status}/{.status.conditions[?(@.type=="Accepted")].reason}/{.status.conditions[?(@.type=="Accepted")].message}"#,
    ]);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_mesh_on_kubernetes_balances_drains_takes_policy_and_survives_a_replica() {
    let cluster = Cluster::start();
    let kubelet = Kubelet::start(&cluster, Images::workspace());
    install(&cluster);

    // The control plane, from its Deployment: two replicas, Ready on their gRPC health.
    let replicas = kubelet.wait_ready_named("weft", "weft-control-plane-", 2, TIMEOUT);
    let addresses: Vec<String> = replicas.iter().map(|p| format!("{}:15010", p.ip)).collect();
    let control_plane = addresses.join(",");

    cluster.apply(&shop(&control_plane));
    let webs = kubelet.wait_ready_named("shop", "web-", 2, TIMEOUT);
    let client = wait_for("a ready client pod", TIMEOUT, || {
        kubelet
            .pods_named("shop", "client-")
            .into_iter()
            .find(|p| p.ready)
    });

    // The client's proxy knows both endpoints, each with the identity its pod's
    // ServiceAccount gives, and holds its own certificate from its projected token.
    let web_identity = "spiffe://cluster.local/ns/shop/sa/web";
    let dump = wait_for(
        "the client proxy to hold both web endpoints",
        TIMEOUT,
        || {
            let dump = proxy_admin(&kubelet, "shop", &client.name, "/config_dump")?;
            webs.iter()
                .all(|w| dump.contains(&format!("{}:15006", w.ip)))
                .then_some(dump)
        },
    );
    assert!(dump.contains(web_identity), "endpoint identities: {dump}");
    assert!(
        dump.contains("spiffe://cluster.local/ns/shop/sa/client"),
        "the client's own identity: {dump}"
    );

    // A ServicePolicy: STRICT mTLS (so every request that succeeds crossed mTLS) and
    // retries on resets, so a pod killed mid-request costs nothing.
    cluster.apply(
        r#"
apiVersion: weft.io/v1alpha1
kind: ServicePolicy
metadata: {name: web, namespace: shop}
spec:
  mtls: STRICT
  retries: {retryOn: [connect-failure, refused-stream, reset, gateway-error], maxRetries: 3}
"#,
    );
    wait_for("ServicePolicy web Accepted", TIMEOUT, || {
        condition(&cluster, "servicepolicy/web")
            .starts_with("True/Accepted")
            .then_some(())
    });
    wait_for("the policy to reach the client proxy", TIMEOUT, || {
        let dump = proxy_admin(&kubelet, "shop", &client.name, "/config_dump")?;
        dump.contains("\"max_retries\": 3").then_some(())
    });

    // Steady load from inside the client pod.
    let load = netns::within(&client.netns, || {
        Load::start(
            SocketAddr::from(([127, 0, 0, 1], 9080)),
            Options {
                rate: 100,
                connections: 4,
                ..Options::default()
            },
        )
    })
    .expect("enter the client pod");
    load.wait_for_successes(100, TIMEOUT);
    let served: BTreeSet<String> = load.snapshot().by_server().into_keys().collect();
    let names: BTreeSet<String> = webs.iter().map(|w| w.name.clone()).collect();
    assert_eq!(served, names, "both replicas serve");

    // weftctl on the Kubernetes-mode control plane: apply writes the CRD object, and
    // top shows the service's traffic, all of it over mTLS.
    let applied = weftctl_with(
        &kubelet,
        &addresses[0],
        &["apply", "-f", "-"],
        r#"
kind: AuthorizationPolicy
metadata: {name: web-callers, namespace: shop}
spec:
  service: web
  allow: [spiffe://cluster.local/ns/shop/sa/client]
"#,
    );
    assert!(applied.contains("web-callers"), "{applied}");
    wait_for("AuthorizationPolicy web-callers Accepted", TIMEOUT, || {
        condition(&cluster, "authorizationpolicies.weft.io/web-callers")
            .starts_with("True/Accepted")
            .then_some(())
    });
    let mut frames = Vec::new();
    let top = wait_for("weftctl top to show shop/web over mTLS", TIMEOUT, || {
        if frames.len() > 20 {
            panic!("weftctl top never showed shop/web over mTLS; last frames: {frames:?}");
        }
        addresses.iter().find_map(|replica| {
            let out = weftctl(
                &kubelet,
                replica,
                &[
                    "top",
                    "--once",
                    "-o",
                    "json",
                    "--interval",
                    "500ms",
                    "--timeout",
                    "5s",
                ],
            );
            frames.push(out.clone());
            let frame: serde_json::Value = serde_json::from_str(out.lines().next()?).ok()?;
            let row = frame["services"]
                .as_array()?
                .iter()
                .find(|s| s["service"] == "shop/web")?
                .clone();
            (row["endpoints"] == 2 && row["rps"].as_f64()? > 0.0 && row["tls"].as_f64()? == 1.0)
                .then_some(row)
        })
    });
    assert_eq!(top["success"].as_f64(), Some(1.0), "{top}");

    // An invalid change is refused with the field named and changes nothing.
    cluster.apply(
        r#"
apiVersion: weft.io/v1alpha1
kind: ServicePolicy
metadata: {name: web, namespace: shop}
spec:
  mtls: STRICT
  retries: {retryOn: [connect-failure, refused-stream, reset, gateway-error], maxRetries: 50}
"#,
    );
    let invalid = wait_for("ServicePolicy web Invalid", TIMEOUT, || {
        let c = condition(&cluster, "servicepolicy/web");
        c.starts_with("False/Invalid").then_some(c)
    });
    assert!(invalid.contains("spec.retries.maxRetries"), "{invalid}");
    let dump = proxy_admin(&kubelet, "shop", &client.name, "/config_dump").expect("config_dump");
    assert!(
        dump.contains("\"max_retries\": 3"),
        "the last good policy still serves"
    );

    // Tokens: only one for the audience `weft` of a live ServiceAccount is good.
    let token = |account: &str, audience: &str| {
        cluster
            .kubectl_ok(&[
                "create",
                "token",
                account,
                "-n",
                "shop",
                "--audience",
                audience,
            ])
            .trim()
            .to_owned()
    };
    cluster.kubectl_ok(&["create", "serviceaccount", "gone", "-n", "shop"]);
    let (good, other_audience, gone) = (
        token("web", "weft"),
        token("web", "other"),
        token("gone", "weft"),
    );
    cluster.kubectl_ok(&["delete", "serviceaccount", "gone", "-n", "shop"]);
    let replica = addresses[0].clone();
    let answers = netns::within(&client.netns, move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            let mut answers = Vec::new();
            for token in [good, other_audience, gone] {
                let mut identity = IdentityClient::connect(format!("http://{replica}"))
                    .await
                    .expect("reach the control plane");
                let answer = identity
                    .certify(v1::CertifyRequest {
                        token,
                        csr: csr("spiffe://cluster.local/ns/shop/sa/web"),
                    })
                    .await
                    .map(|r| r.into_inner().spiffe_id);
                answers.push(answer);
            }
            answers
        })
    })
    .expect("enter the client pod");
    assert_eq!(
        answers[0].as_deref().ok(),
        Some("spiffe://cluster.local/ns/shop/sa/web")
    );
    for (what, answer) in [
        ("another audience", &answers[1]),
        ("a deleted account", &answers[2]),
    ] {
        let status = answer.as_ref().expect_err(what);
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{what}: {status:?}"
        );
        assert!(
            status.message().contains("refused the token"),
            "{what}: the reason is passed on: {status:?}"
        );
    }

    // Every proxy is in sync (ACKed, nothing NACKed), seen from both replicas.
    let proxies = std::iter::once(client.name.clone())
        .chain(webs.iter().map(|w| w.name.clone()))
        .collect::<Vec<_>>();
    wait_for("every proxy synced", TIMEOUT, || {
        let status: String = addresses
            .iter()
            .map(|a| weftctl(&kubelet, a, &["status"]))
            .collect();
        let all = proxies.iter().all(|p| status.contains(p.as_str()));
        (all && !status.contains("NACKED") && !status.contains("STALE")).then_some(())
    });

    // Deleting a pod drains it: no request fails.
    let doomed = &webs[0].name;
    let deleted_at = load.elapsed();
    cluster.kubectl_ok(&["delete", "pod", "-n", "shop", doomed, "--wait=false"]);
    wait_for("the deleted pod to be gone", TIMEOUT, || {
        kubelet.pod("shop", doomed).is_none().then_some(())
    });

    // Both replicas serve the same endpoints at the same version.
    let endpoints_of = |replica: &str| {
        weftctl(
            &kubelet,
            replica,
            &["get", "endpoints", "shop/web", "-o", "yaml"],
        )
    };
    let same = wait_for(
        "both replicas to serve one version of shop/web",
        TIMEOUT,
        || {
            let (one, other) = (endpoints_of(&addresses[0]), endpoints_of(&addresses[1]));
            (one == other && !one.contains(&format!("{}:", webs[0].ip))).then_some(one)
        },
    );
    assert!(same.contains("version:"), "{same}");

    // Killing a control-plane replica: its proxies move to the other, traffic goes on.
    kubelet.kill_container("weft", &replicas[0].name, "control-plane");
    let survivor = &addresses[1];
    wait_for("every proxy on the surviving replica", TIMEOUT, || {
        let status = weftctl(&kubelet, survivor, &["status"]);
        proxies
            .iter()
            .filter(|p| p.as_str() != doomed.as_str())
            .all(|p| status.contains(p.as_str()))
            .then_some(())
    });
    let settled = load.elapsed();
    // The client holds each live web endpoint once, and nothing else (the replacement
    // of the deleted pod comes Ready meanwhile).
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let live: BTreeSet<String> = kubelet
            .pods_named("shop", "web-")
            .into_iter()
            .filter(|p| p.ready)
            .map(|p| format!("\"address\": \"{}:15006\"", p.ip))
            .collect();
        let dump = proxy_admin(&kubelet, "shop", &client.name, "/config_dump").unwrap_or_default();
        let held: Vec<&str> = dump
            .lines()
            .filter(|l| l.contains("\"address\"") && l.contains(":15006\""))
            .map(str::trim)
            .collect();
        let exact = held.len() == live.len()
            && live
                .iter()
                .all(|l| held.iter().any(|h| h.starts_with(l.as_str())));
        if live.len() == 2 && exact {
            assert!(
                !dump.contains(&format!("{}:15006", webs[0].ip)),
                "the deleted pod is gone"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client holds {held:?}; the live endpoints are {live:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    load.wait_for_successes(load.snapshot().succeeded() + 200, TIMEOUT);
    let report = load.stop();
    let failed = report.failed();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed (pod deleted at {deleted_at:?}, replicas settled at {settled:?}): {:?}",
        failed.len(),
        report.sent(),
        failed.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(
        report.last_served_by_after(doomed, settled),
        Duration::ZERO,
        "nothing reaches the deleted pod"
    );
}
