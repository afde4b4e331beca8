//! The played kubelet: one Node that binds unscheduled Pods to itself, runs each as a
//! network namespace on the node's LAN (pod.rs), drives each pod's life a step at a
//! time (lifecycle.rs: init containers, native sidecars gated by their startup
//! probes, restarts, probes, Jobs' ends) and reports what a kubelet reports
//! (status.rs). On deletion it stops the pod within its grace period and confirms
//! with a delete of grace 0.
//!
//! It polls the API server (a list every 50 ms) rather than watching: simpler to make
//! correct, and cheap for the few pods a test runs. Between lists it tends the pods
//! every 10 ms, so a container starts within about that of its turn. Probes run at
//! most every second whatever `periodSeconds` says (`KubeletOptions::
//! probe_period_cap`), so tests do not wait out default 10 s periods; the first runs
//! after initialDelaySeconds, and failureThreshold and successThreshold count as given.
//!
//! Pods get addresses from 10.203.64.0/24 (.10 upward); `client_netns()` is a
//! namespace on the same LAN (10.203.64.2) for tests to reach pods from.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Binding, Node as NodeObject, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use serde_json::json;

use super::cluster::Cluster;
use super::info::{info, PodInfo, PodPhase};
use super::pod::{Node, RunningPod, Stage};
use super::{lifecycle, status, volumes, Images};
use crate::netns::{Lan, Netns};

/// The LAN's /24; pods get .10 upward, the client namespace .2.
const LAN_BASE: [u8; 3] = [10, 203, 64];
const LAN_PREFIX: u8 = 24;
const FIRST_POD_HOST: u8 = 10;
/// How often the pods are listed, and how often they are tended in between.
const SYNC_PERIOD: Duration = Duration::from_millis(50);
const TEND_PERIOD: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct KubeletOptions {
    /// The Node's name (default `weft-node`).
    pub node_name: String,
    pub images: Images,
    /// Only bind Pods in these namespaces (None: every namespace).
    pub namespaces: Option<Vec<String>>,
    /// Probes run at least this often whatever their periodSeconds (default 1 s).
    pub probe_period_cap: Duration,
}

impl KubeletOptions {
    pub fn new(images: Images) -> KubeletOptions {
        KubeletOptions {
            node_name: "weft-node".to_owned(),
            images,
            namespaces: None,
            probe_period_cap: Duration::from_secs(1),
        }
    }
}

#[derive(Default)]
struct State {
    pods: HashMap<String, RunningPod>,
    terminating: HashSet<String>,
    /// Start failures by pod uid: the error and when to try again.
    failed: HashMap<String, (String, Instant)>,
    used_hosts: HashSet<u8>,
}

struct Shared {
    client: Client,
    rt: Arc<tokio::runtime::Runtime>,
    lan: Lan,
    options: KubeletOptions,
    api_port: u16,
    forward_bin: PathBuf,
    pods_dir: PathBuf,
    log: Mutex<std::fs::File>,
    state: Mutex<State>,
    stop: AtomicBool,
}

pub struct Kubelet {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    client_netns: Netns,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Kubelet {
    /// Registers node `weft-node` (Ready) and starts running every Pod of the cluster.
    pub fn start(cluster: &Cluster, images: Images) -> Kubelet {
        Kubelet::start_with(cluster, KubeletOptions::new(images))
    }

    pub fn start_with(cluster: &Cluster, options: KubeletOptions) -> Kubelet {
        match Kubelet::try_start(cluster, options) {
            Ok(kubelet) => kubelet,
            Err(e) => panic!("cannot start the played kubelet: {e:#}"),
        }
    }

    pub fn try_start(cluster: &Cluster, options: KubeletOptions) -> Result<Kubelet> {
        crate::netns::require_root("the played kubelet's pods");
        let dir = tempfile::Builder::new().prefix("weft-kubelet-").tempdir()?;
        // Containers may run as another user (securityContext.runAsUser): every
        // directory down to their pod's must let them through (a tempdir is 0700).
        let pods_dir = dir.path().join("pods");
        std::fs::create_dir(&pods_dir)?;
        for path in [dir.path(), &pods_dir] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
        }
        let log = dir.path().join("kubelet.log");
        let lan = Lan::new();
        let client_netns = Netns::new("k8s-client");
        let [a, b, c] = LAN_BASE;
        lan.attach(&client_netns, &format!("{a}.{b}.{c}.2/{LAN_PREFIX}"));
        let shared = Arc::new(Shared {
            client: cluster.client(),
            rt: cluster.runtime(),
            lan,
            api_port: cluster.api_port(),
            forward_bin: crate::bin("weft-netns-forward"),
            pods_dir,
            log: Mutex::new(std::fs::File::create(&log)?),
            state: Mutex::new(State::default()),
            stop: AtomicBool::new(false),
            options,
        });
        cluster.block_on(register_node(&shared.client, &shared.options.node_name))?;
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("weft-kubelet".into())
                .spawn(move || run(&shared))?
        };
        Ok(Kubelet {
            shared,
            thread: Some(thread),
            client_netns,
            log,
            _dir: dir,
        })
    }

    pub fn node_name(&self) -> &str {
        &self.shared.options.node_name
    }

    /// A namespace on the pods' LAN (10.203.64.2), like another host of the node
    /// network: tests reach pod IPs from it (`client_netns().command("curl")`).
    pub fn client_netns(&self) -> &Netns {
        &self.client_netns
    }

    /// The LAN the pods are on, to attach more namespaces (use 10.203.64.3-9).
    pub fn lan(&self) -> &Lan {
        &self.shared.lan
    }

    /// The kubelet's own log (binds, starts, failures).
    pub fn log_file(&self) -> &Path {
        &self.log
    }

    /// A snapshot of the pod `namespace/name`, if it is bound here (from the moment
    /// its sandbox is set up; finished pods stay until deleted).
    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodInfo> {
        let state = lock(&self.shared.state);
        state
            .pods
            .values()
            .find(|p| p.namespace == namespace && p.name == name)
            .map(info)
    }

    /// The pods of `namespace` whose names start with `prefix` (a Deployment's pods
    /// are `<deployment>-<hash>-<id>`).
    pub fn pods_named(&self, namespace: &str, prefix: &str) -> Vec<PodInfo> {
        self.pods()
            .into_iter()
            .filter(|p| p.namespace == namespace && p.name.starts_with(prefix))
            .collect()
    }

    /// Every pod of this node, whatever its phase.
    pub fn pods(&self) -> Vec<PodInfo> {
        let state = lock(&self.shared.state);
        let mut pods: Vec<PodInfo> = state.pods.values().map(info).collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        pods
    }

    /// Waits until the pod runs here (its init containers done, its containers
    /// started), or panics with the kubelet's log.
    pub fn wait_running(&self, namespace: &str, name: &str, timeout: Duration) -> PodInfo {
        self.wait(&format!("pod {namespace}/{name} running"), timeout, || {
            self.pod(namespace, name)
                .filter(|p| p.phase == PodPhase::Running)
        })
    }

    /// Waits until the pod has Succeeded or Failed.
    pub fn wait_finished(&self, namespace: &str, name: &str, timeout: Duration) -> PodInfo {
        self.wait(&format!("pod {namespace}/{name} finished"), timeout, || {
            self.pod(namespace, name)
                .filter(|p| matches!(p.phase, PodPhase::Succeeded | PodPhase::Failed))
        })
    }

    /// Waits until the pod is Ready (the Ready=True status patch has been sent).
    pub fn wait_ready(&self, namespace: &str, name: &str, timeout: Duration) -> PodInfo {
        self.wait(&format!("pod {namespace}/{name} ready"), timeout, || {
            self.pod(namespace, name)
                .filter(|p| p.ready_sent_at.is_some())
        })
    }

    fn wait<T>(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check() {
                return value;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; kubelet log:\n{}",
                    super::daemon::tail(&self.log, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A command that runs `program` inside the pod's network namespace.
    pub fn pod_command(&self, namespace: &str, name: &str, program: &str) -> Command {
        let state = lock(&self.shared.state);
        let pod = state
            .pods
            .values()
            .find(|p| p.namespace == namespace && p.name == name)
            .unwrap_or_else(|| panic!("pod {namespace}/{name} does not run here"));
        pod.netns()
            .unwrap_or_else(|| panic!("pod {namespace}/{name} has finished: no namespace"))
            .command(program)
    }

    /// SIGKILLs one container's process, as a crash would; the kubelet reports it not
    /// ready and restarts it as the restart policy says.
    pub fn kill_container(&self, namespace: &str, name: &str, container: &str) {
        let mut state = lock(&self.shared.state);
        let pod = state
            .pods
            .values_mut()
            .find(|p| p.namespace == namespace && p.name == name)
            .unwrap_or_else(|| panic!("pod {namespace}/{name} does not run here"));
        let c = pod
            .containers
            .iter_mut()
            .find(|c| c.spec.name == container)
            .unwrap_or_else(|| panic!("pod {namespace}/{name} has no container {container}"));
        let process = c
            .process
            .as_mut()
            .unwrap_or_else(|| panic!("container {container} has not started"));
        process.signal(rustix::process::Signal::KILL);
        process.wait_exit(Duration::from_secs(5));
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let pods: Vec<RunningPod> = {
            let mut state = lock(&self.shared.state);
            state.pods.drain().map(|(_, p)| p).collect()
        };
        for pod in pods {
            if std::thread::panicking() {
                for process in pod.containers.iter().filter_map(|c| c.process.as_ref()) {
                    eprintln!(
                        "---- {} (last 20 lines) ----\n{}",
                        process.name,
                        process.tail(20)
                    );
                }
            }
            pod.stop(Duration::ZERO);
        }
        if std::thread::panicking() {
            eprintln!(
                "---- kubelet (last 40 lines) ----\n{}",
                super::daemon::tail(&self.log, 40)
            );
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn log(&self, line: &str) {
        use std::io::Write;
        let now = humantime_now();
        let _ = writeln!(lock(&self.log), "{now} {line}");
    }

    fn node(&self) -> Node<'_> {
        Node {
            client: &self.client,
            rt: &self.rt,
            lan: &self.lan,
            images: &self.options.images,
            api_port: self.api_port,
            forward_bin: &self.forward_bin,
            pods_dir: &self.pods_dir,
            lan_prefix: LAN_PREFIX,
            probe_period_cap: self.options.probe_period_cap,
        }
    }
}

fn humantime_now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// The Node object, Ready, with room for any pod.
async fn register_node(client: &Client, name: &str) -> Result<()> {
    let nodes = Api::<NodeObject>::all(client.clone());
    let [a, b, c] = LAN_BASE;
    let status = json!({
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "the weft e2e harness plays this kubelet",
            "lastHeartbeatTime": now_rfc3339(), "lastTransitionTime": now_rfc3339(),
        }],
        "addresses": [
            {"type": "InternalIP", "address": format!("{a}.{b}.{c}.1")},
            {"type": "Hostname", "address": name},
        ],
        "capacity": {"cpu": "8", "memory": "32Gi", "pods": "240"},
        "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "240"},
        "nodeInfo": {
            "kubeletVersion": "v1.37.2", "kubeProxyVersion": "", "containerRuntimeVersion": "weft-e2e://0",
            "operatingSystem": "linux", "architecture": "amd64", "osImage": "", "kernelVersion": "",
            "machineID": "", "systemUUID": "", "bootID": "",
        },
    });
    let node: NodeObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        }},
    }))?;
    nodes
        .create(&PostParams::default(), &node)
        .await
        .context("create Node")?;
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .context("Node status")?;
    Ok(())
}

fn now_rfc3339() -> String {
    status::rfc3339(std::time::SystemTime::now())
}

/// The kubelet's loop: until told to stop, list the pods now and then, tend them
/// often.
fn run(shared: &Arc<Shared>) {
    let mut next_sync = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        if Instant::now() >= next_sync {
            next_sync = Instant::now() + SYNC_PERIOD;
            if let Err(e) = sync(shared) {
                shared.log(&format!("sync: {e:#}"));
            }
        }
        tend(shared);
        std::thread::sleep(TEND_PERIOD);
    }
}

fn sync(shared: &Arc<Shared>) -> Result<()> {
    let client = &shared.client;
    let all = shared
        .rt
        .block_on(Api::<Pod>::all(client.clone()).list(&ListParams::default()))?;
    let node_name = &shared.options.node_name;
    let wanted = |pod: &Pod| match &shared.options.namespaces {
        None => true,
        Some(list) => list
            .iter()
            .any(|n| Some(n) == pod.metadata.namespace.as_ref()),
    };
    let mut seen: HashSet<String> = HashSet::new();
    for pod in all.items.iter().filter(|p| wanted(p)) {
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        seen.insert(uid.clone());
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let bound_to = spec.and_then(|s| s.node_name.as_deref());
        let deleting = pod.metadata.deletion_timestamp.is_some();
        match bound_to {
            None if !deleting => {
                shared
                    .rt
                    .block_on(bind(client, &namespace, &name, node_name))?;
                shared.log(&format!("bound {namespace}/{name}"));
            }
            Some(node) if node == node_name => {
                if deleting {
                    terminate(shared, pod, &uid);
                } else {
                    ensure_started(shared, pod, &uid);
                }
            }
            _ => {}
        }
    }
    // Pods removed behind the kubelet's back (a forced delete): stop them at once.
    let gone: Vec<RunningPod> = {
        let mut state = lock(&shared.state);
        state.terminating.retain(|uid| seen.contains(uid));
        state.failed.retain(|uid, _| seen.contains(uid));
        let uids: Vec<String> = state
            .pods
            .keys()
            .filter(|uid| !seen.contains(*uid))
            .cloned()
            .collect();
        uids.iter()
            .filter_map(|uid| state.pods.remove(uid))
            .collect()
    };
    for pod in gone {
        shared.log(&format!(
            "{}/{} is gone: stopping it",
            pod.namespace, pod.name
        ));
        if let Some(ip) = pod.stop(Duration::ZERO) {
            free(shared, ip);
        }
    }
    Ok(())
}

async fn bind(client: &Client, namespace: &str, name: &str, node: &str) -> Result<()> {
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_owned()),
            ..ObjectReference::default()
        },
    };
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create_subresource::<Binding, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
        .with_context(|| format!("bind {namespace}/{name}"))?;
    Ok(())
}

fn ensure_started(shared: &Arc<Shared>, pod: &Pod, uid: &str) {
    let mut state = lock(&shared.state);
    if state.pods.contains_key(uid) || state.terminating.contains(uid) {
        return;
    }
    if let Some((_, retry_at)) = state.failed.get(uid) {
        if Instant::now() < *retry_at {
            return;
        }
    }
    let Some(host) = (FIRST_POD_HOST..=250).find(|h| !state.used_hosts.contains(h)) else {
        shared.log("no free pod address left");
        return;
    };
    let [a, b, c] = LAN_BASE;
    let ip = Ipv4Addr::new(a, b, c, host);
    let name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    );
    match RunningPod::start(&shared.node(), pod, ip) {
        Ok(running) => {
            shared.log(&format!("set up {name} at {ip}"));
            state.used_hosts.insert(host);
            state.failed.remove(uid);
            state.pods.insert(uid.to_owned(), running);
        }
        Err(e) => {
            // Often transient (kube-root-ca.crt not yet published): try again soon.
            shared.log(&format!("cannot start {name}: {e:#}"));
            let message = format!("{e:#}");
            let report = status::report_start_failure(&shared.client, pod, &message);
            let _ = shared.rt.block_on(report);
            state.failed.insert(
                uid.to_owned(),
                (message, Instant::now() + Duration::from_secs(1)),
            );
        }
    }
}

/// A pod with a deletionTimestamp: stop it in the background (its grace period may
/// be long), then confirm the deletion with grace 0, as the kubelet does.
fn terminate(shared: &Arc<Shared>, pod: &Pod, uid: &str) {
    let running = {
        let mut state = lock(&shared.state);
        if !state.terminating.insert(uid.to_owned()) {
            return;
        }
        state.pods.remove(uid)
    };
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(0) as u64;
    let shared = shared.clone();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = uid.to_owned();
    std::thread::spawn(move || {
        if let Some(running) = running {
            shared.log(&format!("stopping {namespace}/{name} (grace {grace}s)"));
            if let Some(ip) = running.stop(Duration::from_secs(grace)) {
                free(&shared, ip);
            }
        }
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let api = Api::<Pod>::namespaced(shared.client.clone(), &namespace);
        match shared.rt.block_on(api.delete(&name, &params)) {
            Ok(_) => shared.log(&format!("deleted {namespace}/{name}")),
            Err(e) => shared.log(&format!("confirm deletion of {namespace}/{name}: {e}")),
        }
    });
}

fn free(shared: &Shared, ip: Ipv4Addr) {
    lock(&shared.state).used_hosts.remove(&ip.octets()[3]);
}

/// For every pod: refresh its tokens, move its life on (lifecycle.rs), free what a
/// finished pod held, and send its status when it changed.
fn tend(shared: &Arc<Shared>) {
    let node = shared.node();
    let log = |line: &str| shared.log(line);
    let mut state = lock(&shared.state);
    let mut freed = Vec::new();
    for pod in state.pods.values_mut() {
        if pod.sandbox.is_some() {
            refresh_tokens(shared, pod);
        }
        lifecycle::advance(pod, &node, &log);
        if matches!(pod.stage, Stage::Done { .. }) {
            freed.extend(pod.release());
        }
        if pod.dirty {
            match shared.rt.block_on(status::report(&shared.client, pod)) {
                Ok(()) => pod.dirty = false,
                Err(e) => shared.log(&format!("status of {}/{}: {e:#}", pod.namespace, pod.name)),
            }
        }
    }
    for ip in freed {
        state.used_hosts.remove(&ip.octets()[3]);
    }
}

/// Projected tokens are re-minted at 80% of their lifetime, as the kubelet does.
fn refresh_tokens(shared: &Shared, pod: &mut RunningPod) {
    for token in &mut pod.volumes.tokens {
        if Instant::now() < token.refresh_at {
            continue;
        }
        let refreshed = shared
            .rt
            .block_on(volumes::refresh_token(&shared.client, &pod.pod, token));
        if let Err(e) = refreshed {
            shared.log(&format!("token of {}/{}: {e:#}", pod.namespace, pod.name));
            token.refresh_at = Instant::now() + Duration::from_secs(1);
        }
    }
}
