//! The figures of sidecar injection, on the tests' real API server and played kubelet
//! (not a test: figures, not pass/fail; `cargo run -p weft-e2e --example
//! injection_figures`, as root, with WEFT_K8S_BIN or the build script's cache).
//!
//! 1. Webhook latency per pod admission: 200 pod creations (server-side dry runs, so
//!    they pass admission and are stored nowhere) in a namespace labelled for
//!    injection, and 200 in one that is not, timed at the client; the difference is
//!    what the webhook adds. Also the API server's own measure of the webhook call
//!    (`apiserver_admission_webhook_admission_duration_seconds`).
//! 2. Pod creation to the app's first successful request through the mesh: 20 Jobs,
//!    one after the other, each a single `curl` to a meshed Service; from the create
//!    call to the moment the server's proxy counts the request (polled every 25 ms,
//!    plus the ~5 ms a scrape takes, so each figure is late by up to ~30 ms).
//!    The played kubelet's timings split it into: to the proxy's start, from there to
//!    its startup probe passing (the kubelet probes every second, as a real one does
//!    with `periodSeconds: 1`), and from there to the app's start.

use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::Api;
use weft_e2e::kube::weft::{curl_job, install, proxy_admin, ControlPlane};
use weft_e2e::kube::{Cluster, Images, Kubelet, PodInfo};
use weft_e2e::wait_for;

const TIMEOUT: Duration = Duration::from_secs(120);
const ADMISSIONS: usize = 200;
const JOBS: usize = 20;

fn main() {
    let curl = weft_e2e::which("curl");
    let cluster = Cluster::start();
    let kubelet = Kubelet::start(&cluster, Images::workspace().with("curl", curl));
    install(&cluster);
    let logs = tempfile::tempdir().expect("temp dir");
    let _control_plane = ControlPlane::connect(&cluster, &kubelet, logs.path());
    cluster.apply(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {weft.io/inject: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, appProtocol: http}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: weft-test-app
        args: ["--listen", "127.0.0.1:8080", "--name", "web"]
"#,
    );

    // 1. Admission latency, with and without the webhook.
    let pod: Pod = serde_yaml::from_str(
        "apiVersion: v1\nkind: Pod\nmetadata: {generateName: figure-}\n\
         spec: {containers: [{name: app, image: weft-test-app}]}\n",
    )
    .expect("a pod");
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let mut timings = Vec::new();
    for namespace in ["shop", "plain"] {
        let pods: Api<Pod> = Api::namespaced(cluster.client(), namespace);
        let mut latencies = Vec::with_capacity(ADMISSIONS);
        for _ in 0..ADMISSIONS {
            let started = Instant::now();
            let created = cluster
                .block_on(pods.create(&dry_run, &pod))
                .expect("a dry-run create");
            latencies.push(started.elapsed());
            let injected = created
                .spec
                .and_then(|s| s.init_containers)
                .is_some_and(|c| c.iter().any(|c| c.name == "weft-proxy"));
            assert_eq!(injected, namespace == "shop", "{namespace}");
        }
        timings.push((namespace, latencies));
    }
    println!("pod admission, {ADMISSIONS} creations each, client-side:");
    for (namespace, latencies) in &mut timings {
        let what = if *namespace == "shop" {
            "with the webhook"
        } else {
            "without"
        };
        report(what, latencies);
    }
    let metrics = cluster.kubectl_ok(&["get", "--raw", "/metrics"]);
    for line in metrics.lines().filter(|l| {
        l.starts_with("apiserver_admission_webhook_admission_duration_seconds_")
            && l.contains("inject.weft.io")
            && (l.contains("_sum") || l.contains("_count"))
    }) {
        println!("  apiserver: {line}");
    }

    // 2. Creation to the first request through the mesh.
    let web = wait_for("the web pod", TIMEOUT, || {
        kubelet
            .pods_named("shop", "web-")
            .into_iter()
            .find(|p| p.ready)
    });
    let cluster_ip = cluster.kubectl_ok(&[
        "-n",
        "shop",
        "get",
        "service",
        "web",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let mut total = Vec::new();
    let mut to_proxy_start = Vec::new();
    let mut proxy_start_to_ready = Vec::new();
    let mut proxy_ready_to_app = Vec::new();
    for n in 0..JOBS {
        let before = served(&kubelet, &web);
        let name = format!("first-request-{n}");
        let created_at = SystemTime::now();
        let started = Instant::now();
        cluster.apply(&curl_job(&name, "shop", &format!("http://{cluster_ip}/")));
        wait_for("the request to arrive", TIMEOUT, || {
            (served(&kubelet, &web) > before).then_some(())
        });
        total.push(started.elapsed());
        let pod = wait_for("the job's pod", TIMEOUT, || {
            kubelet
                .pods_named("shop", &format!("{name}-"))
                .into_iter()
                .next()
        });
        if let (Some(proxy), Some(app)) = (pod.container("weft-proxy"), pod.container("curl")) {
            if let Some(passed) = proxy.startup_passed_at {
                to_proxy_start.push(
                    proxy
                        .started_at
                        .duration_since(created_at)
                        .unwrap_or_default(),
                );
                proxy_start_to_ready
                    .push(passed.duration_since(proxy.started_at).unwrap_or_default());
                proxy_ready_to_app.push(app.started_at.duration_since(passed).unwrap_or_default());
            }
        }
        cluster.kubectl_ok(&["-n", "shop", "delete", "job", &name, "--wait=false"]);
    }
    println!("pod creation -> first request through the mesh, {JOBS} Jobs:");
    report("total", &mut total);
    report(
        "creation -> proxy started (binding, iptables, volumes)",
        &mut to_proxy_start,
    );
    report(
        "proxy started -> its startup probe passed (period 1 s)",
        &mut proxy_start_to_ready,
    );
    report(
        "startup probe passed -> app started",
        &mut proxy_ready_to_app,
    );
}

/// Requests the web pod's proxy has let in.
fn served(kubelet: &Kubelet, web: &PodInfo) -> f64 {
    proxy_admin(kubelet, "shop", &web.name, "/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("weft_requests_total{") && l.contains("direction=\"inbound\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn report(what: &str, latencies: &mut [Duration]) {
    if latencies.is_empty() {
        println!("  {what}: no samples");
        return;
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "  {what}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n = {})",
        at(0.50).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
        latencies[latencies.len() - 1].as_secs_f64() * 1000.0,
        latencies.len()
    );
}
