//! Weft installed on the test cluster as an operator would, from
//! deploy/kubernetes/base, with its injection webhook working: nothing routes a
//! Service's ClusterIP from the host here (no kube-proxy), so the webhook
//! configuration is pointed at a loopback forwarder into the pod network
//! (`clientConfig.url`), and the injector's settings name the control-plane pods'
//! addresses, as an operator without cluster DNS would do.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::json;

use super::{expose, Cluster, Exposed, Kubelet, PodInfo};
use crate::{bin, wait_for};

const TIMEOUT: Duration = Duration::from_secs(90);
/// The webhook configuration of the base, as kubectl names it.
pub const CONFIGURATION: &str = "mutatingwebhookconfiguration/weft-sidecar-injector";
/// The proxy image the tests' injector settings name (any registry and tag map to
/// the workspace's weft-proxy).
pub const PROXY_IMAGE: &str = "example.org/weft/weft-proxy:dev";

/// Applies the base and waits for its CRDs.
pub fn install(cluster: &Cluster) {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/base");
    cluster.kubectl_ok(&["apply", "-k", base.to_str().expect("utf-8 path")]);
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/servicepolicies.weft.io",
    ]);
}

/// The running control plane as the host reaches it: its webhook (for the API
/// server) and its admin API (for weftctl).
pub struct ControlPlane {
    pub webhook: Exposed,
    pub admin: Exposed,
    pub replicas: Vec<PodInfo>,
    /// The injector's settings document it was given (the ConfigMap's `config.yaml`).
    pub settings: String,
}

impl ControlPlane {
    /// Waits for two ready replicas, points the webhook configuration and the
    /// injector's settings at them, and waits for `weftctl check` to pass.
    pub fn connect(cluster: &Cluster, kubelet: &Kubelet, logs: &Path) -> ControlPlane {
        let replicas = kubelet.wait_ready_named("weft", "weft-control-plane-", 2, TIMEOUT);
        let at = |port: u16| -> Vec<SocketAddr> {
            replicas
                .iter()
                .map(|p| SocketAddr::from((p.ip, port)))
                .collect()
        };
        let tag = &replicas[0].name;
        let webhook = expose(
            kubelet,
            &at(15443),
            &logs.join(format!("webhook-{tag}.log")),
        )
        .expect("expose the webhook");
        let admin = expose(kubelet, &at(15010), &logs.join(format!("admin-{tag}.log")))
            .expect("expose the admin API");
        // The whole clientConfig is replaced, its caBundle with it: the control plane
        // must put that back by itself.
        let url = format!("https://{}/inject", webhook.addr);
        let patch = json!([
            {"op": "replace", "path": "/webhooks/0/clientConfig", "value": {"url": url}},
            {"op": "replace", "path": "/webhooks/1/clientConfig", "value": {"url": url}},
        ]);
        cluster.kubectl_ok(&[
            "patch",
            CONFIGURATION,
            "--type",
            "json",
            "-p",
            &patch.to_string(),
        ]);
        let control_plane: Vec<String> = at(15010).iter().map(|a| a.to_string()).collect();
        let settings = format!(
            "proxyImage: {PROXY_IMAGE}\ncontrolPlane: {}\n",
            control_plane.join(",")
        );
        cluster.kubectl_ok(&[
            "-n",
            "weft",
            "patch",
            "configmap",
            "weft-injector",
            "--type",
            "merge",
            "-p",
            &json!({"data": {"config.yaml": &settings}}).to_string(),
        ]);
        let control_plane = ControlPlane {
            webhook,
            admin,
            replicas,
            settings,
        };
        // The leader fills in the caBundle and each replica reissues its certificate
        // for 127.0.0.1 (within 5 s of each other). One `weftctl check` asks one
        // replica, and the forwarder alternates: two passes in a row cover both.
        wait_for("weftctl check to pass on both replicas", TIMEOUT, || {
            let passes = |_| control_plane.check(cluster).status.success();
            (0..2).all(passes).then_some(())
        });
        control_plane
    }

    pub fn check(&self, cluster: &Cluster) -> Output {
        Command::new(bin("weftctl"))
            .env("KUBECONFIG", cluster.kubeconfig())
            .args(["--control-plane", &self.admin.addr.to_string(), "check"])
            .output()
            .expect("run weftctl check")
    }
}

/// A GET of a proxy's admin endpoint (`/metrics`, `/config_dump`, ...) by `curl`
/// from inside its pod; `None` unless it answers 2xx.
pub fn proxy_admin(kubelet: &Kubelet, namespace: &str, pod: &str, path: &str) -> Option<String> {
    let output = kubelet
        .pod_command(namespace, pod, "curl")
        .args([
            "-sf",
            "--max-time",
            "2",
            &format!("http://127.0.0.1:15020{path}"),
        ])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A Job that makes one request with `curl` (the image `curl`, see
/// [`crate::which`]) and no retry: its proxy must already route when it runs.
pub fn curl_job(name: &str, namespace: &str, url: &str) -> String {
    format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: curl
        image: curl
        args: ["-sS", "--fail", "--max-time", "5", "{url}"]
"#
    )
}

/// A hand-written sidecar (for pods the webhook does not inject): the fields of a
/// `weft-proxy` container after its `- name:` line, indented for a pod template,
/// proving its identity with the token of [`SIDECAR_TOKEN_VOLUME`], its admin on
/// 15020 as the readiness probe. `extra` adds arguments, each `, "--flag", "value"`.
pub fn sidecar(control_plane: &str, extra: &str) -> String {
    format!(
        r#"
        image: weft-proxy
        args: ["--control-plane", "{control_plane}", "--node-id", "$(POD_NAME)",
               "--namespace", "$(POD_NAMESPACE)", "--service-account", "$(SERVICE_ACCOUNT)",
               "--identity-token-file", "/var/run/weft/token/token",
               "--admin", "0.0.0.0:15020", "--admin-advertise", "$(POD_IP):15020",
               "--reconnect-max-ms", "500"{extra}]
        env:
        - name: POD_IP
          valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        - name: POD_NAMESPACE
          valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}
        - name: SERVICE_ACCOUNT
          valueFrom: {{fieldRef: {{fieldPath: spec.serviceAccountName}}}}
        readinessProbe:
          httpGet: {{path: /ready, port: 15020}}
          periodSeconds: 1
        volumeMounts:
        - {{name: weft-token, mountPath: /var/run/weft/token, readOnly: true}}"#
    )
}

/// The pod template's `volumes`, holding the projected token [`sidecar`] reads.
pub const SIDECAR_TOKEN_VOLUME: &str = r#"
      volumes:
      - name: weft-token
        projected:
          sources:
          - serviceAccountToken: {audience: weft, expirationSeconds: 3600, path: token}"#;

/// The container of a pod template that runs `weft-test-app` on 127.0.0.1:8080,
/// answering with its pod's name.
pub const NAMED_APP_CONTAINER: &str = r#"      - name: app
        image: weft-test-app
        args: ["--listen", "127.0.0.1:8080", "--name", "$(POD_NAME)"]
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
"#;
