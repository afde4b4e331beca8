//! Sidecar injection on a real kube-apiserver and kube-controller-manager (only the
//! kubelet is played, weft_e2e::kube): the control plane from deploy/kubernetes/base
//! serves the mutating webhook, the API server calls it for every pod of a labelled
//! namespace (the real ReplicaSet and Job controllers make the pods), and the played
//! kubelet runs what was stored: `weft-proxy init`, the proxy as a native sidecar
//! gated by its startup probe, then the app.
//!
//! Nothing routes a Service's ClusterIP from the host here (no kube-proxy), so the
//! webhook configuration is pointed at a loopback forwarder into the pod network
//! (`clientConfig.url`), and the injector's settings name the control-plane pods'
//! addresses: what an operator without cluster DNS would do.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};
use weft_e2e::kube::weft::{
    curl_job, install, proxy_admin, ControlPlane, CONFIGURATION, NAMED_APP_CONTAINER,
};
use weft_e2e::kube::{Cluster, Images, Kubelet};
use weft_e2e::{bin, metric_sum, wait_for};

const TIMEOUT: Duration = Duration::from_secs(90);

fn images() -> Images {
    Images::workspace().with("curl", weft_e2e::which("curl"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `kubectl get -o json`.
fn get(cluster: &Cluster, args: &[&str]) -> Value {
    let mut all = vec!["get", "-o", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&cluster.kubectl_ok(&all)).expect("kubectl's JSON")
}

/// Creates `manifest` with `--dry-run=server`: through admission (the webhook
/// included) and defaulting, stored nowhere. The object as it would be stored.
fn dry_run(cluster: &Cluster, manifest: &str) -> Value {
    let out = cluster.kubectl_stdin(
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        manifest,
    );
    serde_json::from_str(&out).expect("kubectl's JSON")
}

fn names(containers: &Value) -> Vec<String> {
    containers
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// What injection decides in a pod spec: the init containers, the app's containers'
/// names, and the volumes other than the ServiceAccount admission's (its name is
/// random per pod).
fn injected_parts(spec: &Value) -> Value {
    let volumes: Vec<&Value> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| {
            !v["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("kube-api-access-"))
        })
        .collect();
    let mut inits = spec["initContainers"].clone();
    // The ServiceAccount admission mounts its token into every container; a
    // template is not admitted as a pod, so it has no such mount.
    for container in inits.as_array_mut().into_iter().flatten() {
        if let Some(mounts) = container["volumeMounts"].as_array_mut() {
            mounts.retain(|m| {
                !m["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("kube-api-access-"))
            });
            if mounts.is_empty() {
                container["volumeMounts"] = Value::Null;
            }
        }
    }
    json!({"initContainers": inits, "containers": names(&spec["containers"]), "volumes": volumes})
}

const SHOP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {weft.io/inject: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: offline}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, appProtocol: http}]
"#;

/// web's Deployment: two replicas of the named test app.
fn web() -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      serviceAccountName: web
      terminationGracePeriodSeconds: 5
      containers:
{NAMED_APP_CONTAINER}"#
    )
}

fn pod_manifest(namespace: &str, name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{{labels}}}}}\n\
         spec: {{containers: [{{name: app, image: weft-test-app}}]}}\n"
    )
}

/// `weftctl inject --config SETTINGS` of `manifest`: its output and its report.
fn weftctl_inject(manifest: &str, namespace: &str, settings: &Path) -> (String, String) {
    use std::io::Write;
    let mut child = Command::new(bin("weftctl"))
        .args(["inject", "-f", "-", "--namespace", namespace, "--config"])
        .arg(settings)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run weftctl inject");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifest.as_bytes())
        .expect("write the manifest");
    let output = child.wait_with_output().expect("weftctl inject");
    assert!(output.status.success(), "{}", text(&output));
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn labelled_pods_get_a_native_sidecar_that_carries_mtls_and_lets_jobs_finish() {
    let cluster = Cluster::start();
    let kubelet = Kubelet::start(&cluster, images());
    install(&cluster);
    let logs = tempfile::tempdir().expect("temp dir");
    let control_plane = ControlPlane::connect(&cluster, &kubelet, logs.path());
    cluster.apply(SHOP);
    cluster.kubectl_stdin(&["apply", "-n", "shop", "-f", "-"], &web());

    // 1. The real ReplicaSet controller's pods, as stored: the webhook injected them.
    let webs = kubelet.wait_ready_named("shop", "web-", 2, TIMEOUT);
    let stored = get(&cluster, &["-n", "shop", "pod", &webs[0].name]);
    let spec = &stored["spec"];
    assert_eq!(
        names(&spec["initContainers"]),
        ["weft-init", "weft-proxy"],
        "{spec:#}"
    );
    let proxy = &spec["initContainers"][1];
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(proxy["image"], weft_e2e::kube::weft::PROXY_IMAGE);
    assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
    assert_eq!(
        stored["metadata"]["annotations"]["weft.io/proxy-version"],
        env!("CARGO_PKG_VERSION")
    );

    // 2. The app started only after the proxy's startup probe passed.
    for web in &webs {
        let proxy = web.container("weft-proxy").expect("the sidecar ran");
        let app = web.container("app").expect("the app ran");
        let passed = proxy.startup_passed_at.expect("the startup probe passed");
        assert!(
            app.started_at >= passed,
            "{}: the app started before its proxy was ready",
            web.name
        );
    }

    // weftctl inject of the same Deployment gives the same pod spec, once the API
    // server has defaulted both (in a namespace the webhook does not see).
    let settings = logs.path().join("injector.yaml");
    std::fs::write(&settings, &control_plane.settings).expect("write the settings");
    let (offline, report) = weftctl_inject(&web(), "shop", &settings);
    assert!(report.contains("deployment/web injected"), "{report}");
    let offline = cluster.kubectl_stdin(
        &[
            "apply",
            "-n",
            "offline",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
        ],
        &offline,
    );
    let offline: Value = serde_json::from_str(&offline).expect("kubectl's JSON");
    assert_eq!(
        injected_parts(&offline["spec"]["template"]["spec"]),
        injected_parts(spec),
        "weftctl inject and the webhook differ"
    );

    // An opted-out pod and a kube-system pod are untouched.
    let opted_out = dry_run(
        &cluster,
        &pod_manifest("shop", "opted-out", "weft.io/inject: disabled"),
    );
    assert!(
        opted_out["spec"]["initContainers"].is_null(),
        "{opted_out:#}"
    );
    let system = dry_run(
        &cluster,
        &pod_manifest("kube-system", "system", "weft.io/inject: enabled"),
    );
    assert!(system["spec"]["initContainers"].is_null(), "{system:#}");
    // Re-injection is a no-op, through either door.
    let (once, _) = weftctl_inject(&pod_manifest("shop", "twice", ""), "shop", &settings);
    let (twice, report) = weftctl_inject(&once, "shop", &settings);
    assert_eq!(once, twice);
    assert!(report.contains("left alone"), "{report}");
    let admitted = dry_run(&cluster, &once);
    assert_eq!(
        names(&admitted["spec"]["initContainers"]),
        ["weft-init", "weft-proxy"]
    );

    // 2 and 3. A Job in the namespace: its one request, with no retry, crosses both
    // proxies over mTLS; then its main container exits, the sidecar stops and the
    // pod completes.
    let cluster_ip = get(&cluster, &["-n", "shop", "service", "web"])["spec"]["clusterIP"]
        .as_str()
        .expect("a ClusterIP")
        .to_owned();
    cluster.apply(&curl_job(
        "client",
        "shop",
        &format!("http://{cluster_ip}/"),
    ));
    cluster.kubectl_ok(&[
        "-n",
        "shop",
        "wait",
        "--for=condition=Complete",
        "--timeout=90s",
        "job/client",
    ]);
    let pods = get(&cluster, &["-n", "shop", "pods", "-l", "job-name=client"]);
    let pod = &pods["items"][0];
    assert_eq!(pod["status"]["phase"], "Succeeded", "{pod:#}");
    let sidecar = pod["status"]["initContainerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == "weft-proxy")
        .expect("the sidecar's status");
    assert!(
        !sidecar["state"]["terminated"].is_null(),
        "the sidecar stopped: {sidecar:#}"
    );
    let metrics: Vec<String> = webs
        .iter()
        .map(|web| proxy_admin(&kubelet, "shop", &web.name, "/metrics").unwrap_or_default())
        .collect();
    let inbound_mtls: f64 = metrics
        .iter()
        .map(|text| {
            metric_sum(
                text,
                "weft_requests_total",
                &[
                    "direction=\"inbound\"",
                    "tls=\"true\"",
                    "service=\"shop/web\"",
                ],
            )
        })
        .sum();
    assert!(
        inbound_mtls >= 1.0,
        "the Job's request did not arrive over mTLS:\n{}",
        metrics.join("\n")
    );

    let check = control_plane.check(&cluster);
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        text(&check).contains("✓ namespace shop: injection enabled; 2 of 2 pods meshed"),
        "{}",
        text(&check)
    );
    // The injected proxies run this build: `weftctl status` does not mark them. Each
    // replica lists the proxies connected to it; the forwarder alternates.
    let proxies: Vec<Value> = (0..2)
        .flat_map(|_| {
            let status = Command::new(bin("weftctl"))
                .args(["--control-plane", &control_plane.admin.addr.to_string()])
                .args(["status", "-o", "json"])
                .output()
                .expect("run weftctl status");
            assert!(status.status.success(), "{}", text(&status));
            let listed: Vec<Value> = serde_json::from_slice(&status.stdout).expect("status JSON");
            listed
        })
        .collect();
    for web in &webs {
        let proxy = proxies
            .iter()
            .find(|p| p["id"] == web.name.as_str())
            .unwrap_or_else(|| panic!("{} is not connected: {proxies:#?}", web.name));
        assert_eq!(proxy["build"], env!("CARGO_PKG_VERSION"), "{proxy:#}");
        assert_eq!(proxy["outdated"], false, "{proxy:#}");
    }

    // 4. The control plane down: failurePolicy Fail refuses pods that should be
    // meshed, leaves other namespaces alone, and meshed pods keep serving.
    cluster.kubectl_ok(&[
        "-n",
        "weft",
        "scale",
        "deploy/weft-control-plane",
        "--replicas=0",
    ]);
    // Gone from the API server: the played kubelet confirms a deletion only once
    // the pod's processes have exited.
    wait_for("no control-plane pods", TIMEOUT, || {
        get(&cluster, &["-n", "weft", "pods"])["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    });
    let refused = cluster.kubectl_with_input(
        &["create", "-f", "-"],
        &pod_manifest("shop", "while-down", ""),
    );
    assert!(
        !refused.status.success(),
        "created with the control plane down: {}\n{:#}",
        text(&refused),
        get(&cluster, &["-n", "shop", "pod", "while-down"])["spec"]["initContainers"]
    );
    assert!(
        text(&refused).contains("failed calling webhook"),
        "{}",
        text(&refused)
    );
    let elsewhere = dry_run(&cluster, &pod_manifest("offline", "elsewhere", ""));
    assert_eq!(elsewhere["metadata"]["name"], "elsewhere");
    let through_mesh = kubelet
        .pod_command("shop", &webs[0].name, "curl")
        .args([
            "-sS",
            "--fail",
            "--max-time",
            "5",
            &format!("http://{cluster_ip}/"),
        ])
        .output()
        .expect("curl");
    assert!(
        through_mesh.status.success(),
        "meshed traffic with the control plane down: {}",
        text(&through_mesh)
    );

    // Back up: pods are injected again.
    drop(control_plane);
    cluster.kubectl_ok(&[
        "-n",
        "weft",
        "scale",
        "deploy/weft-control-plane",
        "--replicas=2",
    ]);
    let _control_plane = ControlPlane::connect(&cluster, &kubelet, logs.path());
    let again = dry_run(&cluster, &pod_manifest("shop", "after", ""));
    assert_eq!(
        names(&again["spec"]["initContainers"]),
        ["weft-init", "weft-proxy"]
    );
}

#[test]
fn weftctl_check_names_a_wrong_ca_bundle_and_the_permission_that_keeps_it_wrong() {
    let cluster = Cluster::start();
    let kubelet = Kubelet::start(&cluster, images());
    install(&cluster);
    let logs = tempfile::tempdir().expect("temp dir");
    let control_plane = ControlPlane::connect(&cluster, &kubelet, logs.path());
    let healthy = text(&control_plane.check(&cluster));
    for line in [
        "✓ Kubernetes API: v1.37",
        "✓ CRDs",
        "✓ control plane: 2/2 replicas ready",
        "✓ RBAC",
        "✓ webhook configuration: weft-sidecar-injector",
        "✓ webhook caBundle",
        "✓ webhook certificate",
        "✓ injector settings",
    ] {
        assert!(healthy.contains(line), "{line} missing:\n{healthy}");
    }

    // Take away the control plane's right to fix the caBundle, then break it.
    let role = get(&cluster, &["clusterrole", "weft-control-plane"]);
    let index = role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .position(|r| r["resources"][0] == "mutatingwebhookconfigurations")
        .expect("the webhook rule");
    let rule = role["rules"][index].clone();
    let remove = json!([{"op": "remove", "path": format!("/rules/{index}")}]);
    cluster.kubectl_ok(&[
        "patch",
        "clusterrole",
        "weft-control-plane",
        "--type",
        "json",
        "-p",
        &remove.to_string(),
    ]);
    wait_for("the permission to be gone", TIMEOUT, || {
        let output = cluster.kubectl(&[
            "auth",
            "can-i",
            "patch",
            "mutatingwebhookconfigurations/weft-sidecar-injector",
            "--as",
            "system:serviceaccount:weft:weft-control-plane",
        ]);
        (String::from_utf8_lossy(&output.stdout).trim() == "no").then_some(())
    });
    let other = rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .self_signed(&rcgen::KeyPair::generate().expect("key"))
        .expect("a certificate");
    // caBundle is bytes: base64 in JSON, as ByteString writes it.
    let bundle =
        serde_json::to_value(k8s_openapi::ByteString(other.pem().into_bytes())).expect("base64");
    let corrupt = json!([
        {"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle},
        {"op": "replace", "path": "/webhooks/1/clientConfig/caBundle", "value": bundle},
    ]);
    cluster.kubectl_ok(&[
        "patch",
        CONFIGURATION,
        "--type",
        "json",
        "-p",
        &corrupt.to_string(),
    ]);
    let broken = control_plane.check(&cluster);
    let report = text(&broken);
    assert!(!broken.status.success(), "{report}");
    assert!(
        report.contains("✗ webhook caBundle: namespace.inject.weft.io: does not verify"),
        "{report}"
    );
    assert!(
        report.contains("✗ RBAC: system:serviceaccount:weft:weft-control-plane may not")
            && report.contains("patch mutatingwebhookconfigurations/weft-sidecar-injector"),
        "{report}"
    );
    assert!(
        report.contains("✓ control plane: 2/2 replicas ready"),
        "{report}"
    );
    assert!(
        report.contains("2 of "),
        "the failures are counted: {report}"
    );

    // Give the permission back: the control plane repairs the caBundle by itself.
    let restore = json!([{"op": "add", "path": format!("/rules/{index}"), "value": rule}]);
    cluster.kubectl_ok(&[
        "patch",
        "clusterrole",
        "weft-control-plane",
        "--type",
        "json",
        "-p",
        &restore.to_string(),
    ]);
    wait_for("the control plane to repair the caBundle", TIMEOUT, || {
        control_plane.check(&cluster).status.success().then_some(())
    });
}
