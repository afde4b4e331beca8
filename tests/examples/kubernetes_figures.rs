//! The figures of Kubernetes mode, on the tests' real API server and played kubelet
//! (not a test: figures, not pass/fail; `cargo run -p weft-e2e --example
//! kubernetes_figures`, as root, with WEFT_K8S_BIN or the build script's cache).
//!
//! 1. Ready -> proxy: a Deployment of 100 pods behind a Service; for each pod, the
//!    time from the played kubelet's Ready status patch to the moment a client
//!    proxy's /config_dump lists the pod's endpoint (polled every 10 ms, so each
//!    figure is late by up to that much).
//! 2. The control plane's memory (RSS of one replica) before and after 1,000 Services
//!    with 10 endpoints each are written to the API server as Services and
//!    EndpointSlices, once the client proxy holds them all.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use kube::runtime::watcher;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::PostParams;
use kube::Api;
use weft_e2e::kube::{Cluster, Images, Kubelet};
use weft_e2e::wait_for;

const TIMEOUT: Duration = Duration::from_secs(300);

fn main() {
    let cluster = Cluster::start();
    let kubelet = Kubelet::start(&cluster, Images::workspace());
    let base = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes/base");
    cluster.kubectl_ok(&["apply", "-k", base]);
    let replicas = kubelet.wait_ready_named("weft", "weft-control-plane-", 2, TIMEOUT);
    let control_plane: Vec<String> = replicas.iter().map(|p| format!("{}:15010", p.ip)).collect();
    cluster.apply(&client_yaml(&control_plane.join(",")));
    let client = wait_for("the client", TIMEOUT, || {
        kubelet
            .pods_named("figures", "client-")
            .into_iter()
            .find(|p| p.ready)
    });
    let rss_before: Vec<u64> = replicas.iter().map(|p| rss_kib(&p.netns)).collect();

    // 1. Ready -> proxy over 100 pods, with the moment each pod's IP is first listed
    //    ready in the Service's EndpointSlices, to tell Kubernetes' part from Weft's.
    let in_slice: Arc<Mutex<BTreeMap<String, SystemTime>>> = Arc::default();
    let watch_slices = {
        let in_slice = in_slice.clone();
        let slices: Api<EndpointSlice> = Api::namespaced(cluster.client(), "figures");
        cluster.runtime().spawn(async move {
            let events = watcher(slices, watcher::Config::default());
            let mut events = std::pin::pin!(events);
            while let Some(Ok(event)) = events.next().await {
                let (watcher::Event::Apply(slice) | watcher::Event::InitApply(slice)) = event
                else {
                    continue;
                };
                let now = SystemTime::now();
                let mut seen = in_slice.lock().expect("lock");
                for endpoint in slice.endpoints.iter().flatten() {
                    let ready = endpoint
                        .conditions
                        .as_ref()
                        .and_then(|c| c.ready)
                        .unwrap_or(false);
                    if ready {
                        for ip in &endpoint.addresses {
                            seen.entry(ip.clone()).or_insert(now);
                        }
                    }
                }
            }
        })
    };
    cluster.apply(WEB);
    let mut seen: BTreeMap<String, SystemTime> = BTreeMap::new();
    let started = Instant::now();
    while seen.len() < 100 {
        assert!(
            started.elapsed() < TIMEOUT,
            "only {} of 100 endpoints reached the proxy",
            seen.len()
        );
        let dump = config_dump(&client.netns);
        let now = SystemTime::now();
        for pod in kubelet.pods_named("figures", "web-") {
            if pod.ready_sent_at.is_some() && dump.contains(&format!("\"{}:8080\"", pod.ip)) {
                seen.entry(pod.name.clone()).or_insert(now);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut latencies: Vec<Duration> = kubelet
        .pods_named("figures", "web-")
        .iter()
        .filter_map(|p| {
            let ready = p.ready_sent_at?;
            seen.get(&p.name)?.duration_since(ready).ok()
        })
        .collect();
    watch_slices.abort();
    let in_slice = in_slice.lock().expect("lock").clone();
    let (mut kubernetes, mut weft) = (Vec::new(), Vec::new());
    for pod in kubelet.pods_named("figures", "web-") {
        let (Some(ready), Some(listed), Some(held)) = (
            pod.ready_sent_at,
            in_slice.get(&pod.ip.to_string()),
            seen.get(&pod.name),
        ) else {
            continue;
        };
        kubernetes.extend(listed.duration_since(ready).ok());
        weft.extend(held.duration_since(*listed).ok());
    }
    report("ready -> client proxy", &mut latencies);
    report(
        "ready -> listed in the EndpointSlice (Kubernetes)",
        &mut kubernetes,
    );
    report(
        "listed in the EndpointSlice -> client proxy (Weft)",
        &mut weft,
    );

    // 2. Memory with 1,000 Services and 10,000 endpoints.
    let client_api = cluster.client();
    let written = Instant::now();
    cluster.block_on(async move {
        let services: Api<Service> = Api::namespaced(client_api.clone(), "figures");
        let slices: Api<EndpointSlice> = Api::namespaced(client_api, "figures");
        for i in 0..1000u32 {
            let name = format!("svc-{i}");
            let service: Service = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": {"ports": [{"name": "http", "port": 80}]}
            }))
            .expect("a Service");
            services
                .create(&PostParams::default(), &service)
                .await
                .expect("create Service");
            let endpoints: Vec<serde_json::Value> = (0..10u32)
                .map(|j| {
                    serde_json::json!({
                        "addresses": [format!("10.250.{}.{}", i / 25, (i % 25) * 10 + j)],
                        "conditions": {"ready": true}
                    })
                })
                .collect();
            let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("{name}-1"),
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": endpoints
            }))
            .expect("an EndpointSlice");
            slices
                .create(&PostParams::default(), &slice)
                .await
                .expect("create EndpointSlice");
        }
    });
    let writing = written.elapsed();
    wait_for(
        "the client proxy to hold svc-999's endpoints",
        TIMEOUT,
        || {
            config_dump(&client.netns)
                .contains("10.250.39.249")
                .then_some(())
        },
    );
    let served = written.elapsed();
    let rss_after: Vec<u64> = replicas.iter().map(|p| rss_kib(&p.netns)).collect();
    println!(
        "1,000 Services / 10,000 endpoints: written in {writing:?}, at the client proxy {served:?} after the first write"
    );
    println!("control plane RSS (KiB) per replica: before {rss_before:?}, after {rss_after:?}");
    println!("cluster RSS (KiB): {:?}", cluster.rss_kib());
}

fn report(what: &str, latencies: &mut [Duration]) {
    latencies.sort();
    let quantile = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "{what} over {} pods: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        quantile(0.5),
        quantile(0.99),
        quantile(1.0)
    );
}

fn config_dump(netns: &str) -> String {
    weft_e2e::netns::within(netns, || {
        let mut stream = TcpStream::connect("127.0.0.1:15020").ok()?;
        stream
            .write_all(b"GET /config_dump HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).ok()?;
        Some(body)
    })
    .ok()
    .flatten()
    .unwrap_or_default()
}

/// The RSS of the control plane process in a pod's namespace.
fn rss_kib(netns: &str) -> u64 {
    let output = std::process::Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim().starts_with("weft-control"))
        })
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

fn client_yaml(control_plane: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: figures}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: client, namespace: figures}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: client}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      containers:
      - name: weft-proxy
        image: weft-proxy
        args: ["--control-plane", "{control_plane}", "--namespace", "figures",
               "--admin", "0.0.0.0:15020", "--outbound", "127.0.0.1:15001"]
"#
    )
}

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: figures}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: figures}
spec:
  replicas: 100
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: weft-test-app
        args: ["--listen", "$(POD_IP):8080", "--name", "$(POD_NAME)"]
        env:
        - name: POD_IP
          valueFrom: {fieldRef: {fieldPath: status.podIP}}
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
"#;
