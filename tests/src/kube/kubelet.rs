//! The played kubelet, as tests hold it: one Node that binds unscheduled Pods to
//! itself, runs each as a network namespace on the node's LAN (pod.rs), drives each
//! pod's life a step at a time (lifecycle.rs: init containers, native sidecars gated by
//! their startup probes, restarts, probes, Jobs' ends) and reports what a kubelet
//! reports (status.rs). On deletion it stops the pod within its grace period and
//! confirms with a delete of grace 0. Its loop is in sync.rs.
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

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::cluster::Cluster;
use super::info::{info, PodInfo, PodPhase};
use super::pod::RunningPod;
use super::sync::{lock, register_node, run, Shared, State, LAN_BASE, LAN_PREFIX};
use super::Images;
use crate::netns::{Lan, Netns};

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

    /// Waits until exactly `count` pods of `namespace` named `prefix...` are Ready
    /// (a Deployment's pods, once it has scaled), and returns them.
    pub fn wait_ready_named(
        &self,
        namespace: &str,
        prefix: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<PodInfo> {
        crate::wait_for(
            &format!("{count} ready pods {namespace}/{prefix}*"),
            timeout,
            || {
                let ready: Vec<PodInfo> = self
                    .pods_named(namespace, prefix)
                    .into_iter()
                    .filter(|p| p.ready)
                    .collect();
                (ready.len() == count).then_some(ready)
            },
        )
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
