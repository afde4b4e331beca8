//! Snapshots of the played kubelet's pods for tests: where each pod is, its phase, and
//! per container when it started, when its startup probe passed and how it ended, with
//! the exact times (the API server only has whole seconds).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::SystemTime;

pub use super::container::ContainerKind;
use super::pod::{RunningPod, Stage, API_FORWARD_PORT};

/// The pod's phase, as reported to the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    /// Its init containers (and sidecars' startup probes) are not all done.
    Pending,
    Running,
    /// Every regular container exited 0 and the sidecars were stopped.
    Succeeded,
    Failed,
}

/// One container that has started at least once.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub name: String,
    pub kind: ContainerKind,
    /// When its current (or last) run started.
    pub started_at: SystemTime,
    /// When that run's startup probe passed; its start when it has no startup probe;
    /// None while the probe has not passed.
    pub startup_passed_at: Option<SystemTime>,
    pub ready: bool,
    /// How that run ended (None while it runs): the exit status, or 128 + the signal.
    pub exit_code: Option<i32>,
    pub finished_at: Option<SystemTime>,
    pub restarts: i32,
    /// The process id of that run (its process may have exited).
    pub pid: Option<u32>,
    pub log: PathBuf,
}

impl ContainerInfo {
    pub fn is_sidecar(&self) -> bool {
        self.kind == ContainerKind::Sidecar
    }

    pub fn is_running(&self) -> bool {
        self.exit_code.is_none()
    }
}

/// A snapshot of one pod of the played kubelet, for tests.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub ip: Ipv4Addr,
    /// The pod's network namespace (`ip netns exec NAME ...`); deleted once the pod
    /// has Succeeded or Failed.
    pub netns: String,
    /// The pod's host directory: volumes/<name>/, <container>.log, kubeconfig.
    pub dir: PathBuf,
    /// The host directory of the `kube-api-access-*` volume (token, ca.crt, namespace).
    pub service_account_dir: Option<PathBuf>,
    /// (container, mountPath, host directory) of every volumeMount.
    pub mounts: Vec<(String, String, PathBuf)>,
    /// (container, log file) of every container, init containers first.
    pub logs: Vec<(String, PathBuf)>,
    pub phase: PodPhase,
    /// Every container that has started, init containers first, in spec order.
    pub containers: Vec<ContainerInfo>,
    pub ready: bool,
    /// When the status patch that set Ready=True was sent (None while not Ready).
    pub ready_sent_at: Option<SystemTime>,
    /// Restarts of all its containers.
    pub restarts: i32,
}

impl PodInfo {
    /// The host path for `mount_path` as seen by `container`.
    pub fn host_path(&self, container: &str, mount_path: &str) -> Option<PathBuf> {
        self.mounts
            .iter()
            .find(|(c, m, _)| c == container && m == mount_path)
            .map(|(_, _, host)| host.clone())
    }

    /// Where processes in this pod reach the API server (inside its namespace).
    pub fn api_address(&self) -> String {
        format!("127.0.0.1:{API_FORWARD_PORT}")
    }

    /// The container `name`, if it has started.
    pub fn container(&self, name: &str) -> Option<&ContainerInfo> {
        self.containers.iter().find(|c| c.name == name)
    }
}

pub(super) fn info(pod: &RunningPod) -> PodInfo {
    let phase = match pod.stage {
        Stage::Initializing { .. } => PodPhase::Pending,
        Stage::Running | Stage::Ending { .. } => PodPhase::Running,
        Stage::Done { succeeded: true } => PodPhase::Succeeded,
        Stage::Done { succeeded: false } => PodPhase::Failed,
    };
    let containers = pod
        .containers
        .iter()
        .filter_map(|c| {
            let process = c.process.as_ref()?;
            Some(ContainerInfo {
                name: c.spec.name.clone(),
                kind: c.kind,
                started_at: c.started_at?,
                startup_passed_at: c.startup_passed_at,
                ready: c.ready,
                exit_code: c.terminated.map(|t| t.exit_code),
                finished_at: c.terminated.map(|t| t.finished_at),
                restarts: c.restarts,
                pid: process.pid(),
                log: process.log.clone(),
            })
        })
        .collect();
    PodInfo {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
        ip: pod.ip,
        netns: pod.netns_name.clone(),
        dir: pod.dir.clone(),
        service_account_dir: pod.service_account_dir(),
        mounts: pod.mounts.clone(),
        logs: pod
            .containers
            .iter()
            .map(|c| (c.spec.name.clone(), pod.log_path(&c.spec.name)))
            .collect(),
        phase,
        containers,
        ready: pod.reported_ready == Some(true),
        ready_sent_at: pod.ready_sent_at,
        restarts: pod.containers.iter().map(|c| c.restarts).sum(),
    }
}
