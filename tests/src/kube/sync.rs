//! The played kubelet's loop and the state it shares with the `Kubelet` handle: list
//! the pods every 50 ms, bind the unscheduled ones, set up new ones (pod.rs), stop the
//! deleted ones in the background; between lists, every 10 ms, tend each pod
//! (lifecycle.rs) and send its status when it changed (status.rs). Also the Node
//! object it registers, and the pods' addresses on the node's LAN.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Binding, Node as NodeObject, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use serde_json::json;

use super::kubelet::KubeletOptions;
use super::pod::{Node, RunningPod, Stage};
use super::{lifecycle, status, volumes};
use crate::netns::Lan;

/// The LAN's /24; pods get .10 upward, the client namespace .2.
pub(super) const LAN_BASE: [u8; 3] = [10, 203, 64];
pub(super) const LAN_PREFIX: u8 = 24;
const FIRST_POD_HOST: u8 = 10;
/// How often the pods are listed, and how often they are tended in between.
const SYNC_PERIOD: Duration = Duration::from_millis(50);
const TEND_PERIOD: Duration = Duration::from_millis(10);

#[derive(Default)]
pub(super) struct State {
    pub(super) pods: HashMap<String, RunningPod>,
    pub(super) terminating: HashSet<String>,
    /// Start failures by pod uid: the error and when to try again.
    pub(super) failed: HashMap<String, (String, Instant)>,
    pub(super) used_hosts: HashSet<u8>,
}

pub(super) struct Shared {
    pub(super) client: Client,
    pub(super) rt: Arc<tokio::runtime::Runtime>,
    pub(super) lan: Lan,
    pub(super) options: KubeletOptions,
    pub(super) api_port: u16,
    pub(super) forward_bin: PathBuf,
    pub(super) pods_dir: PathBuf,
    pub(super) log: Mutex<std::fs::File>,
    pub(super) state: Mutex<State>,
    pub(super) stop: AtomicBool,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub(super) fn log(&self, line: &str) {
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
pub(super) async fn register_node(client: &Client, name: &str) -> Result<()> {
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
pub(super) fn run(shared: &Arc<Shared>) {
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
