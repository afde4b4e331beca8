//! One Pod as the played kubelet runs it: its sandbox (a network namespace on the
//! node's LAN with its IP, and a `weft-netns-forward` to the API server), its volumes
//! as host directories, its containers (container.rs; started by lifecycle.rs, each
//! process made by spawn.rs), where it is in its life (`Stage`), and how it stops when
//! deleted.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use rustix::process::Signal;

use super::container::{ContainerKind, RunningContainer};
use super::daemon::Daemon;
use super::pki::kubeconfig_with_token_file;
use super::volumes::{self, Volumes};
use super::Images;
use crate::netns::{Lan, Netns};

/// Where processes in a pod reach the API server: this address inside the pod's
/// namespace is forwarded to the real one on the host's loopback.
pub const API_FORWARD_PORT: u16 = 6443;

/// The mountPath of the ServiceAccount admission plugin's `kube-api-access-*` volume.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Where a pod is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Init containers run one at a time, in order; `next` indexes the first one not
    /// yet done (a plain one is done when it has exited 0, a sidecar once its startup
    /// probe has passed).
    Initializing { next: usize },
    /// Every regular container has been started.
    Running,
    /// The regular containers are done for good (restartPolicy Never or OnFailure, or
    /// an init container failed under Never): the sidecars get SIGTERM in reverse
    /// order, each once the ones after it have exited; SIGKILL at `deadline`.
    Ending { succeeded: bool, deadline: Instant },
    /// Terminal: every process has exited, the sandbox is gone.
    Done { succeeded: bool },
}

/// `spec.restartPolicy`: which exits the kubelet restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    fn of(pod: &Pod) -> RestartPolicy {
        let policy = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref());
        match policy {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether an exit with `code` restarts a container of `kind` (a sidecar always
    /// restarts; a plain init container only after a failure, unless Never).
    pub fn restarts(self, kind: ContainerKind, code: i32) -> bool {
        match (kind, self) {
            (ContainerKind::Sidecar, _) => true,
            (_, RestartPolicy::Never) => false,
            (_, RestartPolicy::OnFailure) | (ContainerKind::Init, _) => code != 0,
            (ContainerKind::Regular, RestartPolicy::Always) => true,
        }
    }
}

/// The pod's network namespace and its forwarder to the API server.
#[derive(Debug)]
pub struct Sandbox {
    forward: Daemon,
    // Last: the namespace goes after every process in it.
    pub netns: Netns,
}

#[derive(Debug)]
pub struct RunningPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub ip: Ipv4Addr,
    pub pod: Pod,
    pub dir: PathBuf,
    /// (container, mountPath, host path) for every volumeMount.
    pub mounts: Vec<(String, String, PathBuf)>,
    pub volumes: Volumes,
    /// Every container of the spec: the init containers in order, then the regular ones.
    pub containers: Vec<RunningContainer>,
    pub restart_policy: RestartPolicy,
    pub stage: Stage,
    pub started_at: SystemTime,
    /// When the last status patch with Ready=True was sent (None while not ready).
    pub ready_sent_at: Option<SystemTime>,
    pub reported_ready: Option<bool>,
    /// Set when something changed that the API server has not been told yet.
    pub dirty: bool,
    /// The network namespace's name (it stays known after the sandbox is gone).
    pub netns_name: String,
    /// Last: the sandbox goes after the containers. None once the pod has finished.
    pub sandbox: Option<Sandbox>,
}

/// What a pod needs from the node.
pub struct Node<'a> {
    pub client: &'a Client,
    pub rt: &'a tokio::runtime::Runtime,
    pub lan: &'a Lan,
    pub images: &'a Images,
    pub api_port: u16,
    pub forward_bin: &'a Path,
    pub pods_dir: &'a Path,
    pub lan_prefix: u8,
    /// Probes run at least this often whatever their periodSeconds.
    pub probe_period_cap: Duration,
}

impl RunningPod {
    /// Sets up the pod's sandbox and volumes; its containers start later, one step at
    /// a time (lifecycle.rs), so that no pod holds up another.
    pub fn start(node: &Node<'_>, pod: &Pod, ip: Ipv4Addr) -> Result<RunningPod> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().context("pod without name")?;
        let uid = pod.metadata.uid.clone().context("pod without uid")?;
        let spec = pod.spec.clone().context("pod without spec")?;
        let dir = node
            .pods_dir
            .join(format!("{namespace}_{name}_{}", &uid[..8.min(uid.len())]));
        std::fs::create_dir_all(&dir)?;
        // Containers may run as another user (securityContext.runAsUser): they need to
        // reach their volumes and the kubeconfig.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;

        let volumes = node.rt.block_on(volumes::materialize(
            node.client,
            pod,
            &ip.to_string(),
            &dir,
        ))?;
        let netns = Netns::new(&short(&name));
        node.lan
            .attach(&netns, &format!("{ip}/{}", node.lan_prefix));
        netns.default_route("eth0");

        let forward = Daemon::spawn(
            "weft-netns-forward",
            Command::new(node.forward_bin).args([
                "--netns",
                netns.name(),
                "--listen",
                &format!("127.0.0.1:{API_FORWARD_PORT}"),
                "--to",
                &format!("127.0.0.1:{}", node.api_port),
            ]),
            &dir.join("forward.log"),
        )?;
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                let sidecar = c.restart_policy.as_deref() == Some("Always");
                let kind = if sidecar {
                    ContainerKind::Sidecar
                } else {
                    ContainerKind::Init
                };
                RunningContainer::new(c, kind)
            })
            .chain(
                spec.containers
                    .iter()
                    .map(|c| RunningContainer::new(c, ContainerKind::Regular)),
            )
            .collect();
        let mut pod_state = RunningPod {
            namespace,
            name,
            uid,
            ip,
            pod: pod.clone(),
            dir,
            mounts: Vec::new(),
            volumes,
            containers,
            restart_policy: RestartPolicy::of(pod),
            stage: Stage::Initializing { next: 0 },
            started_at: SystemTime::now(),
            ready_sent_at: None,
            reported_ready: None,
            dirty: true,
            netns_name: netns.name().to_owned(),
            sandbox: Some(Sandbox { forward, netns }),
        };
        pod_state.wait_forward()?;
        pod_state.write_kubeconfig()?;
        Ok(pod_state)
    }

    /// Waits for the forwarder's "listening" line: containers may call the API at once.
    fn wait_forward(&mut self) -> Result<()> {
        let Some(sandbox) = self.sandbox.as_mut() else {
            bail!("the pod's sandbox is gone");
        };
        let forward = &mut sandbox.forward;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(&forward.log).unwrap_or_default();
            if log.contains("listening on") {
                return Ok(());
            }
            if !forward.is_running() || Instant::now() > deadline {
                bail!("weft-netns-forward did not start:\n{}", forward.tail(20));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A kubeconfig inside the pod directory that reaches the API server through the
    /// forwarder with the pod's own service-account token (what in-cluster config
    /// would use), given to every container as KUBECONFIG.
    fn write_kubeconfig(&self) -> Result<()> {
        let Some(dir) = self.service_account_dir() else {
            return Ok(());
        };
        let text = kubeconfig_with_token_file(
            &format!("https://127.0.0.1:{API_FORWARD_PORT}"),
            &dir.join("ca.crt"),
            &dir.join("token"),
        );
        let path = self.dir.join("kubeconfig");
        std::fs::write(&path, text)?;
        // It names files, holds no secret: readable by a container of any user.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        Ok(())
    }

    /// The host directory of the `kube-api-access-*` volume (token, ca.crt, namespace).
    pub fn service_account_dir(&self) -> Option<PathBuf> {
        self.volumes
            .dirs
            .iter()
            .find(|(name, _)| name.starts_with("kube-api-access-"))
            .map(|(_, dir)| dir.clone())
    }

    /// Where a container's stdout and stderr go.
    pub fn log_path(&self, container: &str) -> PathBuf {
        self.dir.join(format!("{container}.log"))
    }

    /// The pod's network namespace, while it has one.
    pub fn netns(&self) -> Option<&Netns> {
        self.sandbox.as_ref().map(|s| &s.netns)
    }

    /// `terminationGracePeriodSeconds` (default 30).
    pub fn grace_period(&self) -> Duration {
        let seconds = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        Duration::from_secs(seconds.max(0) as u64)
    }

    /// Kills whatever still runs and removes the sandbox; returns the pod's address if
    /// it still held it (to be handed out again).
    pub fn release(&mut self) -> Option<Ipv4Addr> {
        for c in &mut self.containers {
            if let Some(process) = c.process.as_mut() {
                process.kill();
            }
        }
        let mut sandbox = self.sandbox.take()?;
        sandbox.forward.kill();
        drop(sandbox);
        Some(self.ip)
    }

    /// Stops the pod as the kubelet does on deletion: SIGTERM to the init and regular
    /// containers; once those have exited, to the sidecars in reverse order, each once
    /// the ones after it have exited; SIGKILL to whatever is left at the end of
    /// `grace`. Then the forwarder and the namespace go. Returns the address if the
    /// pod still held it.
    pub fn stop(mut self, grace: Duration) -> Option<Ipv4Addr> {
        let deadline = Instant::now() + grace;
        let left = || deadline.saturating_duration_since(Instant::now());
        let not_sidecars = |c: &&mut RunningContainer| c.kind != ContainerKind::Sidecar;
        for c in self.containers.iter_mut().filter(not_sidecars) {
            if let Some(process) = c.process.as_mut() {
                process.signal(Signal::TERM);
            }
        }
        for c in self.containers.iter_mut().filter(not_sidecars) {
            if let Some(process) = c.process.as_mut() {
                process.wait_exit(left());
            }
        }
        for c in self.containers.iter_mut().rev() {
            if c.kind != ContainerKind::Sidecar {
                continue;
            }
            if let Some(process) = c.process.as_mut() {
                process.signal(Signal::TERM);
                process.wait_exit(left());
            }
        }
        self.release()
    }
}

/// A readable tag for the pod's namespace name (`ip netns list`).
fn short(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(24)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_restart_what_kubernetes_restarts() {
        use ContainerKind::*;
        use RestartPolicy::*;
        let cases = [
            (Sidecar, Never, 0, true),
            (Sidecar, OnFailure, 0, true),
            (Init, Always, 0, false),
            (Init, Always, 1, true),
            (Init, OnFailure, 1, true),
            (Init, Never, 1, false),
            (Regular, Always, 0, true),
            (Regular, OnFailure, 0, false),
            (Regular, OnFailure, 2, true),
            (Regular, Never, 2, false),
        ];
        for (kind, policy, code, want) in cases {
            assert_eq!(
                policy.restarts(kind, code),
                want,
                "{kind:?} {policy:?} {code}"
            );
        }
    }
}
