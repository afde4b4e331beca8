//! The Kubernetes test harness on the real parts: a real kube-apiserver and
//! kube-controller-manager (tests/scripts/k8s-binaries.sh), with only the kubelet
//! played (weft_e2e::kube::Kubelet). A Deployment becomes a ReplicaSet and Pods through
//! the real controllers, the played kubelet runs them as network namespaces, the real
//! EndpointSlice controller publishes their IPs, and processes in pods reach the API
//! server with their projected service-account token.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::Api;
use weft_e2e::kube::{Cluster, Images, Kubelet};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A Deployment of two weft-test-app replicas behind a Service. The second container
/// ignores SIGTERM, so each pod takes its 3 s grace period to stop, as a real app
/// draining its connections would: long enough to see its endpoint `terminating`.
const SHOP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 3
      containers:
      - name: app
        image: registry.example/weft-test-app:dev
        args: ["--listen", "$(POD_IP):8080", "--name", "$(POD_NAME)"]
        env:
        - name: POD_IP
          valueFrom: {fieldRef: {fieldPath: status.podIP}}
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /health, port: http}
          periodSeconds: 1
      - name: drain
        image: sh
        command: ["sh", "-c", "trap '' TERM; while :; do sleep 1; done"]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

/// (ip, ready, terminating) of each endpoint in the Service's slices.
fn endpoints(slices: &[EndpointSlice]) -> BTreeSet<(String, bool, bool)> {
    slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .flat_map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            e.addresses.iter().map(move |ip| {
                (
                    ip.clone(),
                    c.ready.unwrap_or(false),
                    c.terminating.unwrap_or(false),
                )
            })
        })
        .collect()
}

#[test]
fn deployment_pods_are_run_published_and_reached() {
    let started = Instant::now();
    let cluster = Cluster::start();
    let t = cluster.start_times;
    eprintln!(
        "cluster up: etcd {:?}, apiserver ready {:?}, controller-manager working {:?}; RSS KiB {:?}",
        t.etcd,
        t.apiserver,
        t.controller_manager,
        cluster.rss_kib()
    );
    let images = Images::new()
        .with("weft-test-app", weft_e2e::bin("weft-test-app"))
        .with("sh", "/bin/sh");
    let kubelet = Kubelet::start(&cluster, images);
    cluster.apply(SHOP);

    // The real controllers make the ReplicaSet and two Pods; the kubelet runs them.
    let pods = weft_e2e::wait_for("two web pods running", TIMEOUT, || {
        let pods: Vec<_> = kubelet
            .pods()
            .into_iter()
            .filter(|p| p.namespace == "shop")
            .collect();
        (pods.len() == 2).then_some(pods)
    });
    let owners = cluster.kubectl_ok(&[
        "get",
        "pods",
        "-n",
        "shop",
        "-o",
        "jsonpath={range .items[*]}{.metadata.ownerReferences[0].kind}{\"\\n\"}{end}",
    ]);
    assert_eq!(
        owners.lines().collect::<Vec<_>>(),
        ["ReplicaSet", "ReplicaSet"]
    );

    // The real EndpointSlice controller lists both pod IPs as ready.
    let slices: Api<EndpointSlice> = Api::namespaced(cluster.client(), "shop");
    let by_service = ListParams::default().labels("kubernetes.io/service-name=web");
    let want: BTreeSet<(String, bool, bool)> = pods
        .iter()
        .map(|p| (p.ip.to_string(), true, false))
        .collect();
    weft_e2e::wait_for("both pod IPs ready in the EndpointSlice", TIMEOUT, || {
        let list = cluster.block_on(slices.list(&by_service)).ok()?;
        (endpoints(&list.items) == want).then_some(())
    });
    for pod in &pods {
        let info = kubelet.pod("shop", &pod.name).expect("pod still runs");
        assert!(info.ready && info.ready_sent_at.is_some(), "{info:?}");
    }

    // Another host on the pods' LAN reaches each pod at its IP.
    for pod in &pods {
        let addr = SocketAddr::from((pod.ip, 8080));
        let (status, body) = weft_e2e::netns::within(kubelet.client_netns().name(), || {
            weft_e2e::http_get(addr, "/")
        })
        .expect("enter the client namespace")
        .unwrap_or_else(|e| panic!("GET http://{addr}/: {e}"));
        assert_eq!((status, body.trim()), (200, pod.name.as_str()));
    }

    // Deleting a pod: its endpoint turns terminating (not ready) during the grace
    // period, then goes once the kubelet has stopped it and confirmed the deletion.
    let victim = &pods[0];
    let victim_ip = victim.ip.to_string();
    let list = cluster
        .block_on(slices.list(&by_service))
        .expect("list slices");
    let version = list.metadata.resource_version.clone().unwrap_or_default();
    let seen = cluster.block_on(async {
        let mut events = Box::pin(
            slices
                .watch(
                    &WatchParams::default().labels("kubernetes.io/service-name=web"),
                    &version,
                )
                .await
                .expect("watch EndpointSlices"),
        );
        let pods_api: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(cluster.client(), "shop");
        pods_api
            .delete(&victim.name, &Default::default())
            .await
            .expect("delete pod");
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let event = tokio::time::timeout_at(deadline, events.try_next())
                .await
                .expect("the victim's endpoint to go")
                .expect("watch error")
                .expect("watch ended");
            let (WatchEvent::Modified(slice) | WatchEvent::Added(slice)) = event else {
                continue;
            };
            let state = endpoints(std::slice::from_ref(&slice))
                .into_iter()
                .find(|(ip, _, _)| *ip == victim_ip);
            seen.push(state.clone());
            if state.is_none() {
                return seen;
            }
        }
    });
    assert!(
        seen.contains(&Some((victim_ip.clone(), false, true))),
        "the endpoint was never seen terminating: {seen:?}"
    );
    // The Deployment replaces the pod; the new one is published ready too.
    weft_e2e::wait_for("the replacement pod ready in the slice", TIMEOUT, || {
        let list = cluster.block_on(slices.list(&by_service)).ok()?;
        let now = endpoints(&list.items);
        (now.len() == 2 && now.iter().all(|(ip, ready, _)| *ready && *ip != victim_ip))
            .then_some(())
    });
    eprintln!("test took {:?}", started.elapsed());
}

/// A process in a pod reads the API server through the pod's forwarder with its
/// projected token, using only what the kubelet gives it: KUBERNETES_SERVICE_HOST/PORT
/// and the kube-api-access volume at its usual mountPath (rewritten to the pod's dir).
#[test]
fn pods_reach_the_api_server_with_their_token() {
    let cluster = Cluster::start();
    let kubelet = Kubelet::start(&cluster, Images::new().with("sh", "/bin/sh"));
    let sa = weft_e2e::kube::SERVICE_ACCOUNT_DIR;
    let script = format!(
        "auth=\"Authorization: Bearer $(cat {sa}/token)\"; \
         api=https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; \
         curl -sS --cacert {sa}/ca.crt -H \"$auth\" $api/version; echo; \
         curl -sS --cacert {sa}/ca.crt -H \"$auth\" -H 'Content-Type: application/json' \
           -d '{{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"SelfSubjectReview\"}}' \
           $api/apis/authentication.k8s.io/v1/selfsubjectreviews; echo; \
         echo namespace=$(cat {sa}/namespace); echo done; exec sleep 600"
    );
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "client", "namespace": "default"},
        "spec": {"containers": [{"name": "curl", "image": "sh", "command": ["sh", "-c", script]}]},
    });
    cluster.apply(&pod.to_string());
    let info = kubelet.wait_running("default", "client", TIMEOUT);
    let log = &info.logs[0].1;
    let output = weft_e2e::wait_for("the pod's requests", TIMEOUT, || {
        let text = std::fs::read_to_string(log).ok()?;
        text.contains("done").then_some(text)
    });
    assert!(output.contains("\"gitVersion\": \"v1.37.2\""), "{output}");
    assert!(
        output.contains("\"username\": \"system:serviceaccount:default:default\""),
        "the token did not authenticate as the pod's service account:\n{output}"
    );
    assert!(output.contains("namespace=default"), "{output}");
    // The token is bound to the pod, as a kubelet-minted one is.
    assert!(
        output.contains("authentication.kubernetes.io/pod-name"),
        "{output}"
    );
}

/// The pod's Ready condition and its container's restart count, as the API server has
/// them.
fn ready_and_restarts(cluster: &Cluster, namespace: &str, name: &str) -> Option<(bool, i32)> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(cluster.client(), namespace);
    let pod = cluster.block_on(pods.get(name)).ok()?;
    let status = pod.status?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let restarts = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    Some((ready, restarts))
}

/// A failing readiness probe turns the pod's Ready condition False and a passing one
/// True again; a crashed container is reported and restarted. The probe's file lives
/// in an emptyDir, named by its mountPath in the args (rewritten to the pod's dir).
#[test]
fn readiness_failures_and_crashes_are_reported() {
    let cluster = Cluster::start();
    let images = Images::new().with("weft-test-app", weft_e2e::bin("weft-test-app"));
    let kubelet = Kubelet::start(&cluster, images);
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app", "namespace": "default"},
        "spec": {
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            "containers": [{
                "name": "app", "image": "weft-test-app",
                "args": ["--listen", "$(POD_IP):8080", "--name", "app",
                         "--unhealthy-file", "/scratch/unhealthy"],
                "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                "readinessProbe": {"httpGet": {"path": "/health", "port": 8080},
                                   "periodSeconds": 1, "failureThreshold": 1},
            }],
        },
    });
    cluster.apply(&pod.to_string());
    let info = kubelet.wait_ready("default", "app", TIMEOUT);
    let state = |what: &str, want: (bool, i32)| {
        weft_e2e::wait_for(what, TIMEOUT, || {
            (ready_and_restarts(&cluster, "default", "app")? == want).then_some(())
        })
    };
    state("Ready", (true, 0));

    let unhealthy = info
        .host_path("app", "/scratch")
        .expect("the emptyDir's host directory")
        .join("unhealthy");
    std::fs::write(&unhealthy, "").expect("make the app unhealthy");
    state("Ready=False after the probe fails", (false, 0));
    std::fs::remove_file(&unhealthy).expect("make the app healthy");
    state("Ready=True after the probe passes", (true, 0));

    kubelet.kill_container("default", "app", "app");
    state("the crash reported and the container restarted", (true, 1));
}
