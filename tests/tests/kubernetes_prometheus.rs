//! deploy/observability's Kubernetes scrape config in a real Prometheus, against a real
//! kube-apiserver (only the kubelet is played, weft_e2e::kube): Prometheus discovers
//! the pods, keeps each injected proxy by its `weft-admin` port, labels it with its
//! namespace and pod, scrapes it, and leaves every other pod alone.
//!
//! Debian's Prometheus has no Kubernetes discovery, so this one is built from
//! Prometheus's Go module by tests/scripts/prometheus-binary.sh (`$WEFT_PROMETHEUS`,
//! which tests/run.sh sets, or the script run here when it is unset). Prometheus runs
//! inside the LAN's client namespace, where pod IPs route; a forwarder there makes the
//! API server's loopback address reach the host's, so the admin kubeconfig works as
//! it is.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use weft_e2e::kube::weft::{install, ControlPlane, NAMED_APP_CONTAINER};
use weft_e2e::kube::{Cluster, Daemon, Images, Kubelet};
use weft_e2e::{bin, wait_for};

const TIMEOUT: Duration = Duration::from_secs(90);
/// Prometheus's port inside the client namespace, which nothing else uses.
const PROMETHEUS_PORT: u16 = 19090;

/// A meshed namespace with a Deployment of two replicas, and a pod in a namespace
/// the injector does not see.
fn manifests() -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: shop, labels: {{weft.io/inject: enabled}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: plain}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: web, namespace: shop}}
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
      containers:
{NAMED_APP_CONTAINER}---
apiVersion: v1
kind: Pod
metadata: {{name: unmeshed, namespace: plain}}
spec:
  containers:
  - name: app
    image: weft-test-app
    args: ["--listen", "127.0.0.1:8080"]
    ports: [{{name: http, containerPort: 8080}}]
"#
    )
}

fn prometheus_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("WEFT_PROMETHEUS") {
        return PathBuf::from(path);
    }
    eprintln!("WEFT_PROMETHEUS is unset: running tests/scripts/prometheus-binary.sh (the first build takes a few minutes)");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/prometheus-binary.sh");
    let output = Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run prometheus-binary.sh");
    assert!(output.status.success(), "prometheus-binary.sh failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    PathBuf::from(stdout.lines().last().expect("the binary's path").trim())
}

/// The shipped config with the rules beside it, as an operator deploys it, changed
/// only where this cluster differs: the API server is found through `kubeconfig`
/// rather than in-cluster credentials, and scrapes come every second so the test
/// need not wait out the 15 s interval.
fn write_config(dir: &Path, kubeconfig: &Path) -> PathBuf {
    let observability = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/observability");
    let shipped =
        std::fs::read_to_string(observability.join("prometheus/prometheus-kubernetes.yml"))
            .expect("the Kubernetes scrape config");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&shipped).expect("valid YAML");
    config["global"]["scrape_interval"] = "1s".into();
    let job = &mut config["scrape_configs"][0];
    assert_eq!(job["job_name"], "weft-proxies");
    let discovery = &mut job["kubernetes_sd_configs"][0];
    assert_eq!(discovery["role"], "pod");
    discovery["kubeconfig_file"] = kubeconfig.to_str().expect("utf-8 path").into();

    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    for file in ["weft-recording.yml", "weft-alerts.yml"] {
        std::fs::copy(observability.join("rules").join(file), rules.join(file))
            .expect("copy rules");
    }
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, serde_yaml::to_string(&config).expect("YAML")).expect("write config");
    path
}

/// Starts `command` as a daemon and waits until its log has `line`.
fn spawn_until(name: &str, command: &mut Command, log: &Path, line: &str) -> Daemon {
    let mut daemon = Daemon::spawn(name, command, log).expect("start");
    wait_for(&format!("{name} to log {line:?}"), TIMEOUT, || {
        assert!(daemon.is_running(), "{name} exited:\n{}", daemon.tail(30));
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(line)
            .then_some(())
    });
    daemon
}

#[test]
fn prometheus_discovers_and_scrapes_exactly_the_injected_proxies() {
    let prometheus = prometheus_binary();
    let cluster = Cluster::start();
    let kubelet = Kubelet::start(&cluster, Images::workspace());
    install(&cluster);
    let logs = tempfile::tempdir().expect("temp dir");
    let _control_plane = ControlPlane::connect(&cluster, &kubelet, logs.path());
    cluster.apply(&manifests());
    let webs = kubelet.wait_ready_named("shop", "web-", 2, TIMEOUT);
    kubelet.wait_ready_named("plain", "unmeshed", 1, TIMEOUT);

    let netns = kubelet.client_netns();
    let api = format!("127.0.0.1:{}", cluster.api_port());
    let _forward = spawn_until(
        "weft-netns-forward (to the API server)",
        Command::new(bin("weft-netns-forward")).args([
            "--netns",
            netns.name(),
            "--listen",
            &api,
            "--to",
            &api,
        ]),
        &logs.path().join("forward.log"),
        "listening on",
    );
    let config = write_config(logs.path(), cluster.kubeconfig());
    let _prometheus = spawn_until(
        "prometheus",
        netns
            .command(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                logs.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}")),
        &logs.path().join("prometheus.log"),
        "Server is ready to receive web requests.",
    );
    let api_get = |path: &str| -> Option<Value> {
        let url = format!("http://127.0.0.1:{PROMETHEUS_PORT}{path}");
        let output = netns.run("curl", &["-sf", "--max-time", "5", &url]);
        let body: Value = serde_json::from_slice(&output.stdout).ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    };

    // Every injected proxy, up, labelled with its pod; the unmeshed pod and the
    // control plane's (which declare no weft-admin port) are no targets.
    let expected: BTreeSet<String> = webs.iter().map(|w| w.name.clone()).collect();
    let targets = wait_for("both proxies scraped and up", TIMEOUT, || {
        let data = api_get("/api/v1/targets?state=active")?;
        let targets = data["activeTargets"].as_array()?.clone();
        let up = targets.iter().filter(|t| t["health"] == "up").count();
        (up == expected.len() && targets.len() == expected.len()).then_some(targets)
    });
    let mut pods = BTreeSet::new();
    for target in &targets {
        let labels = &target["labels"];
        assert_eq!(labels["job"], "weft-proxies", "{target:#}");
        assert_eq!(labels["namespace"], "shop", "{target:#}");
        let pod = labels["pod"].as_str().expect("a pod label").to_owned();
        assert_eq!(labels["instance"], format!("shop/{pod}"), "{target:#}");
        assert!(
            target["scrapeUrl"]
                .as_str()
                .is_some_and(|u| u.ends_with(":15020/metrics")),
            "{target:#}"
        );
        pods.insert(pod);
    }
    assert_eq!(pods, expected);

    // The proxies' own series arrive under those labels, and the rules load.
    let series = wait_for("weft_build_info from both proxies", TIMEOUT, || {
        let data = api_get("/api/v1/query?query=weft_build_info")?;
        let result = data["result"].as_array()?.clone();
        (result.len() == expected.len()).then_some(result)
    });
    let scraped: BTreeSet<String> = series
        .iter()
        .filter_map(|s| s["metric"]["pod"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(scraped, expected);
    let rules = api_get("/api/v1/rules").expect("the rules API");
    let groups = rules["groups"].as_array().expect("rule groups");
    let loaded: usize = groups
        .iter()
        .map(|g| g["rules"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(loaded, 19, "12 recording and 7 alerting rules: {rules:#}");
}
