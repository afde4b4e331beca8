//! The played kubelet runs pods the way sidecar injection needs, against the real
//! kube-apiserver and kube-controller-manager: native sidecars gate the containers
//! after them until their startup probe passes, without holding up other pods; Jobs
//! with a sidecar end (the sidecar stopped, the pod Succeeded or Failed) and the real
//! Job controller sees them complete or fail; containers run as their
//! securityContext's user and can use their volumes.

use std::path::Path;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::Api;
use weft_e2e::kube::{Cluster, Images, Kubelet, PodInfo, PodPhase};

const TIMEOUT: Duration = Duration::from_secs(60);

fn images() -> Images {
    Images::new()
        .with("weft-test-app", weft_e2e::bin("weft-test-app"))
        .with("sh", "/bin/sh")
}

/// The pod as the API server has it.
fn api_pod(cluster: &Cluster, namespace: &str, name: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(cluster.client(), namespace);
    cluster
        .block_on(pods.get(name))
        .unwrap_or_else(|e| panic!("get pod {namespace}/{name}: {e}"))
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The reported status of container `name`, init containers included.
fn container_status<'a>(pod: &'a Pod, name: &str) -> &'a ContainerStatus {
    let status = pod.status.as_ref().expect("pod status");
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no status for container {name}: {status:?}"))
}

fn condition(pod: &Pod, kind: &str) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == kind))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

/// (exit code, reason) of a terminated container's status.
fn terminated(status: &ContainerStatus) -> Option<(i32, String)> {
    let ended = status.state.as_ref()?.terminated.as_ref()?;
    Some((ended.exit_code, ended.reason.clone().unwrap_or_default()))
}

/// Whether a network namespace still exists (`ip netns add` makes /run/netns/NAME).
fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// A pod whose native sidecar passes its startup probe only when the test lets it (it
/// answers /health 503 while the gate file exists), created with a plain pod: the
/// plain one becomes Ready while the first waits, so the wait holds up nothing else;
/// then the app starts only after the sidecar's startup probe has passed. A third pod
/// whose startup probe never passes is killed and restarted, and its passing readiness
/// probe never counts.
#[test]
fn a_sidecar_startup_probe_gates_its_pod_and_only_its_pod() {
    let cluster = Cluster::start();
    let kubelet = Kubelet::start(&cluster, images());
    let gate_dir = tempfile::tempdir().expect("temp dir");
    let gate = gate_dir.path().join("gate");
    std::fs::write(&gate, "").expect("close the gate");

    let pod_ip = serde_json::json!([{"name": "POD_IP",
        "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]);
    let app = |name: &str| {
        serde_json::json!({
            "name": "app", "image": "weft-test-app", "env": pod_ip,
            "args": ["--listen", "$(POD_IP):8080", "--name", name],
            "readinessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 1},
        })
    };
    let gated = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "gated", "namespace": "default"},
        "spec": {
            "initContainers": [{
                "name": "proxy", "image": "weft-test-app", "restartPolicy": "Always",
                "args": ["--listen", "0.0.0.0:15020", "--name", "proxy",
                         "--unhealthy-file", gate.to_string_lossy()],
                "startupProbe": {"httpGet": {"path": "/health", "port": 15020},
                                 "periodSeconds": 1, "failureThreshold": 600},
            }],
            "containers": [app("gated")],
        },
    });
    let plain = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "plain", "namespace": "default"},
        "spec": {"containers": [app("plain")]},
    });
    let mut never_started = app("never-started");
    never_started["startupProbe"] = serde_json::json!(
        {"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 2});
    let never_started = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "never-started", "namespace": "default"},
        "spec": {"containers": [never_started]},
    });
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List",
                                  "items": [gated, plain, never_started]});
    cluster.apply(&list.to_string());

    // The plain pod gets Ready while the gated one's sidecar runs, not yet started.
    kubelet.wait_ready("default", "plain", TIMEOUT);
    let waiting = weft_e2e::wait_for("the gated pod's sidecar running", TIMEOUT, || {
        kubelet
            .pod("default", "gated")
            .filter(|p| p.container("proxy").is_some())
    });
    assert_eq!(waiting.phase, PodPhase::Pending, "{waiting:?}");
    assert!(waiting.container("app").is_none(), "{waiting:?}");
    let proxy = waiting.container("proxy").expect("the sidecar");
    assert!(proxy.is_sidecar() && proxy.startup_passed_at.is_none());
    let reported = weft_e2e::wait_for("the sidecar reported running", TIMEOUT, || {
        let pod = api_pod(&cluster, "default", "gated");
        let status = container_status(&pod, "proxy");
        let running = status.state.as_ref()?.running.is_some();
        running.then_some(pod)
    });
    assert_eq!(phase(&reported), "Pending");
    assert_eq!(condition(&reported, "Initialized"), "False");
    assert_eq!(container_status(&reported, "proxy").started, Some(false));

    // Open the gate: the probe passes, then the app starts, then the pod is Ready.
    std::fs::remove_file(&gate).expect("open the gate");
    let ready = kubelet.wait_ready("default", "gated", TIMEOUT);
    let proxy = ready.container("proxy").expect("the sidecar");
    let app = ready.container("app").expect("the app");
    let passed = proxy.startup_passed_at.expect("the startup probe passed");
    assert!(app.started_at >= passed, "app {app:?} before {proxy:?}");
    assert_eq!((proxy.restarts, app.restarts), (0, 0));
    let pod = api_pod(&cluster, "default", "gated");
    assert_eq!(
        (phase(&pod), condition(&pod, "Ready").as_str()),
        ("Running", "True")
    );
    let proxy_status = container_status(&pod, "proxy");
    assert_eq!(
        (proxy_status.started, proxy_status.ready),
        (Some(true), true)
    );

    // The startup probe of never-started fails twice: killed, restarted; its
    // readiness probe would pass but never counts.
    let restarted = weft_e2e::wait_for("never-started restarted", TIMEOUT, || {
        let pod = api_pod(&cluster, "default", "never-started");
        (container_status(&pod, "app").restart_count >= 1).then_some(pod)
    });
    let status = container_status(&restarted, "app");
    assert_eq!((status.started, status.ready), (Some(false), false));
    let last = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    assert_eq!(last.map(|t| t.exit_code), Some(137), "{status:?}");
    assert_eq!(condition(&restarted, "Ready"), "False");
    let info = kubelet.pod("default", "never-started").expect("the pod");
    assert!(
        info.ready_sent_at.is_none() && info.restarts >= 1,
        "{info:?}"
    );
}

/// Waits for the real Job controller to set the Job's `condition`; returns the Job's
/// pod as the kubelet has it, finished.
fn finished_job(cluster: &Cluster, kubelet: &Kubelet, job: &str, condition: &str) -> PodInfo {
    let timeout = format!("--timeout={}s", TIMEOUT.as_secs());
    let wanted = format!("--for=condition={condition}");
    cluster.kubectl_ok(&["wait", &wanted, &format!("job/{job}"), &timeout]);
    let pod = weft_e2e::wait_for(&format!("the pod of job {job}"), TIMEOUT, || {
        kubelet
            .pods_named("default", &format!("{job}-"))
            .into_iter()
            .next()
    });
    kubelet.wait_finished("default", &pod.name, TIMEOUT)
}

fn finished_at(pod: &PodInfo, container: &str) -> SystemTime {
    pod.container(container)
        .and_then(|c| c.finished_at)
        .unwrap_or_else(|| panic!("{container} has not finished: {pod:?}"))
}

/// A Job whose main container exits 0 beside two long-running sidecars (the first as
/// injection makes it: uid 1337, a startup probe on its admin port): the sidecars
/// are stopped (the last declared first; one exits 3 on SIGTERM, which does not count),
/// the pod Succeeds and the real Job controller marks the Job Complete. A Job whose
/// main exits 1 (backoffLimit 0) fails; its sidecar ignores SIGTERM and is killed at
/// the end of the grace period.
#[test]
fn jobs_with_sidecars_complete_and_fail() {
    let cluster = Cluster::start();
    let kubelet = Kubelet::start(&cluster, images());
    cluster.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: done, namespace: default}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      initContainers:
      - name: proxy
        image: weft-test-app
        restartPolicy: Always
        args: ["--listen", "0.0.0.0:15020", "--name", "proxy"]
        startupProbe: {httpGet: {path: /health, port: 15020}, periodSeconds: 1}
        securityContext: {runAsUser: 1337, runAsGroup: 1337}
      - name: logger
        image: sh
        restartPolicy: Always
        command: ["sh", "-c", "trap 'exit 3' TERM; while :; do sleep 0.05; done"]
      containers:
      - name: main
        image: sh
        command: ["sh", "-c", "curl -sf http://127.0.0.1:15020/health && echo main-done"]
---
apiVersion: batch/v1
kind: Job
metadata: {name: fails, namespace: default}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      initContainers:
      - name: stubborn
        image: sh
        restartPolicy: Always
        command: ["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"]
      containers:
      - name: main
        image: sh
        command: ["sh", "-c", "exit 1"]
"#,
    );

    let done = finished_job(&cluster, &kubelet, "done", "Complete");
    assert_eq!(done.phase, PodPhase::Succeeded, "{done:?}");
    let main = done.container("main").expect("main ran");
    let proxy = done.container("proxy").expect("the proxy ran");
    assert_eq!(main.exit_code, Some(0));
    assert!(main.started_at >= proxy.startup_passed_at.expect("proxy started"));
    eprintln!(
        "the sidecar's startup probe (periodSeconds 1) passed {:?} after its start",
        proxy
            .startup_passed_at
            .and_then(|t| t.duration_since(proxy.started_at).ok())
    );
    let log = std::fs::read_to_string(&main.log).expect("main's log");
    assert!(log.contains("main-done"), "{log}");
    // The sidecars stopped in reverse order; logger's exit 3 did not fail the pod.
    assert_eq!(done.container("logger").and_then(|c| c.exit_code), Some(3));
    assert!(proxy.exit_code.is_some(), "{proxy:?}");
    assert!(finished_at(&done, "logger") <= finished_at(&done, "proxy"));
    assert!(!netns_exists(&done.netns), "the pod's namespace is left");
    let pod = api_pod(&cluster, "default", &done.name);
    assert_eq!(phase(&pod), "Succeeded");
    assert_eq!(condition(&pod, "Ready"), "False");
    let main_status = container_status(&pod, "main");
    assert_eq!(terminated(main_status), Some((0, "Completed".to_owned())));
    assert!(!main_status.ready);
    assert!(terminated(container_status(&pod, "proxy")).is_some());

    let failed = finished_job(&cluster, &kubelet, "fails", "Failed");
    assert_eq!(failed.phase, PodPhase::Failed, "{failed:?}");
    let stubborn = failed.container("stubborn").expect("the sidecar ran");
    assert_eq!(stubborn.exit_code, Some(137), "killed: {stubborn:?}");
    let held = finished_at(&failed, "stubborn")
        .duration_since(finished_at(&failed, "main"))
        .unwrap_or_default();
    assert!(
        held >= Duration::from_secs(1),
        "killed after {held:?}, before the grace period"
    );
    let pod = api_pod(&cluster, "default", &failed.name);
    assert_eq!(phase(&pod), "Failed");
    assert_eq!(
        terminated(container_status(&pod, "main")),
        Some((1, "Error".to_owned()))
    );
}

/// runAsUser/runAsGroup of a container (over the pod's): the process runs as that user,
/// writes its emptyDir and reads its projected token and its service-account volume.
#[test]
fn containers_run_as_their_security_context_user() {
    let cluster = Cluster::start();
    let kubelet = Kubelet::start(&cluster, images());
    let sa = weft_e2e::kube::SERVICE_ACCOUNT_DIR;
    let script = format!(
        "echo ids=$(id -u):$(id -g); echo hello > /var/lib/weft/written && echo wrote; \
         test -s /var/run/weft/token/token && echo token-read; \
         test -s {sa}/token && echo sa-read; echo done; exec sleep 600"
    );
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "as-proxy", "namespace": "default"},
        "spec": {
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000},
            "volumes": [
                {"name": "state", "emptyDir": {}},
                {"name": "token", "projected": {"sources": [
                    {"serviceAccountToken": {"audience": "weft", "path": "token"}}]}},
            ],
            "containers": [
                {"name": "proxy", "image": "sh", "command": ["sh", "-c", script],
                 "securityContext": {"runAsUser": 1337, "runAsGroup": 1337},
                 "volumeMounts": [
                    {"name": "state", "mountPath": "/var/lib/weft"},
                    {"name": "token", "mountPath": "/var/run/weft/token", "readOnly": true}]},
                {"name": "other", "image": "sh",
                 "command": ["sh", "-c", "echo ids=$(id -u):$(id -g); exec sleep 600"]},
            ],
        },
    });
    cluster.apply(&pod.to_string());
    let info = kubelet.wait_running("default", "as-proxy", TIMEOUT);
    let proxy = info.container("proxy").expect("proxy started");
    let output = weft_e2e::wait_for("the proxy container's checks", TIMEOUT, || {
        let text = std::fs::read_to_string(&proxy.log).ok()?;
        text.contains("done").then_some(text)
    });
    assert_eq!(
        output.lines().collect::<Vec<_>>(),
        ["ids=1337:1337", "wrote", "token-read", "sa-read", "done"],
        "{output}"
    );
    // The kernel's view of the process (sleep, exec'd by the script).
    let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.pid.expect("pid")))
        .expect("the proxy's /proc status");
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    assert_eq!(
        uid.split_whitespace().collect::<Vec<_>>(),
        ["Uid:", "1337", "1337", "1337", "1337"]
    );
    let written = info
        .host_path("proxy", "/var/lib/weft")
        .expect("the emptyDir")
        .join("written");
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&written).expect("written"));
    assert_eq!(owner, 1337);

    let other = info.container("other").expect("other started");
    let output = weft_e2e::wait_for("the other container's ids", TIMEOUT, || {
        let text = std::fs::read_to_string(&other.log).ok()?;
        text.contains("ids=").then_some(text)
    });
    assert_eq!(output.trim(), "ids=1000:1000", "the pod's securityContext");
}
