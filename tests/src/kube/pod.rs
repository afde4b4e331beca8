//! One Pod as the played kubelet runs it: a network namespace on the node's LAN with
//! its IP, its volumes as host directories, a `weft-netns-forward` to the API server,
//! and each container as a local binary started inside the namespace.
//!
//! Processes share the host's filesystem, so a container's `volumeMounts` cannot be
//! mounted at their `mountPath`: each mountPath is instead rewritten to the volume's
//! host directory wherever it appears in the container's command, args and env.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Client;
use rustix::process::Signal;

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

/// One running container (or native sidecar).
#[derive(Debug)]
pub struct RunningContainer {
    pub spec: Container,
    pub sidecar: bool,
    pub process: Daemon,
    pub restarts: i32,
    pub ready: bool,
    pub started_at: SystemTime,
    /// Probe results in a row, for failureThreshold / successThreshold.
    pub successes: i32,
    pub failures: i32,
    pub next_probe: Instant,
    pub exit_code: Option<i32>,
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
    pub containers: Vec<RunningContainer>,
    pub started_at: SystemTime,
    /// When the last status patch with Ready=True was sent (None while not ready).
    pub ready_sent_at: Option<SystemTime>,
    pub reported_ready: Option<bool>,
    /// Set when something changed that the API server has not been told yet.
    pub dirty: bool,
    forward: Daemon,
    // Last: the namespace goes after every process in it.
    pub netns: Netns,
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
}

impl RunningPod {
    /// Sets up the pod and starts its containers (init containers run to completion
    /// first; native sidecars start before the app and keep running).
    pub fn start(node: &Node<'_>, pod: &Pod, ip: Ipv4Addr) -> Result<RunningPod> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().context("pod without name")?;
        let uid = pod.metadata.uid.clone().context("pod without uid")?;
        let spec = pod.spec.clone().context("pod without spec")?;
        let dir = node
            .pods_dir
            .join(format!("{namespace}_{name}_{}", &uid[..8.min(uid.len())]));
        std::fs::create_dir_all(&dir)?;

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
        let mut pod_state = RunningPod {
            namespace,
            name,
            uid,
            ip,
            pod: pod.clone(),
            dir,
            mounts: Vec::new(),
            volumes,
            containers: Vec::new(),
            started_at: SystemTime::now(),
            ready_sent_at: None,
            reported_ready: None,
            dirty: true,
            forward,
            netns,
        };
        pod_state.wait_forward()?;
        pod_state.write_kubeconfig(node)?;

        for container in spec.init_containers.iter().flatten() {
            let sidecar = container.restart_policy.as_deref() == Some("Always");
            let mut process = pod_state.spawn(node, container)?;
            if sidecar {
                pod_state
                    .containers
                    .push(RunningContainer::new(container, true, process));
                continue;
            }
            // A plain init container must finish, and succeed, before the next.
            while process.is_running() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let code = process.exit_code();
            if code != Some(0) {
                bail!(
                    "init container {} exited {code:?}:\n{}",
                    container.name,
                    process.tail(20)
                );
            }
        }
        for container in &spec.containers {
            let process = pod_state.spawn(node, container)?;
            pod_state
                .containers
                .push(RunningContainer::new(container, false, process));
        }
        Ok(pod_state)
    }

    /// Waits for the forwarder's "listening" line: containers may call the API at once.
    fn wait_forward(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(&self.forward.log).unwrap_or_default();
            if log.contains("listening on") {
                return Ok(());
            }
            if !self.forward.is_running() || Instant::now() > deadline {
                bail!(
                    "weft-netns-forward did not start:\n{}",
                    self.forward.tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A kubeconfig inside the pod directory that reaches the API server through the
    /// forwarder with the pod's own service-account token (what in-cluster config
    /// would use), given to every container as KUBECONFIG.
    fn write_kubeconfig(&self, node: &Node<'_>) -> Result<()> {
        let Some(dir) = self.service_account_dir() else {
            return Ok(());
        };
        let text = kubeconfig_with_token_file(
            &format!("https://127.0.0.1:{API_FORWARD_PORT}"),
            &dir.join("ca.crt"),
            &dir.join("token"),
        );
        let _ = node;
        std::fs::write(self.dir.join("kubeconfig"), text)?;
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

    /// Starts one container's process inside the pod's namespace.
    fn spawn(&mut self, node: &Node<'_>, container: &Container) -> Result<Daemon> {
        let image = container.image.as_deref().unwrap_or("");
        let binary = node.images.resolve(image).with_context(|| {
            format!(
                "container {}: no local binary for image {image:?}",
                container.name
            )
        })?;

        // Mounts: longest mountPath first, so /a/b is rewritten before /a.
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let dir = self
                .volumes
                .dirs
                .get(&mount.name)
                .with_context(|| format!("volumeMount of unknown volume {}", mount.name))?;
            let host = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => dir.join(sub),
                None => dir.clone(),
            };
            self.mounts.push((
                container.name.clone(),
                mount.mount_path.clone(),
                host.clone(),
            ));
            mounts.push((mount.mount_path.trim_end_matches('/').to_owned(), host));
        }
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        let rewrite = |value: &str| rewrite_paths(value, &mounts);

        let env = self.env(container)?;
        let expand = |value: &str| expand_vars(value, &env);
        let mut argv: Vec<String> = Vec::new();
        match container.command.as_deref() {
            Some([first, rest @ ..]) => {
                // The image's binary is its entrypoint; a command naming it (by path or
                // by name) runs that binary, anything else runs as given.
                let first = expand(first);
                let named = Path::new(&first).file_name() == binary.file_name()
                    || node.images.resolve(&first).as_ref() == Some(&binary);
                argv.push(if named {
                    binary.to_string_lossy().into_owned()
                } else {
                    first
                });
                argv.extend(rest.iter().map(|a| expand(a)));
            }
            _ => argv.push(binary.to_string_lossy().into_owned()),
        }
        argv.extend(container.args.iter().flatten().map(|a| expand(a)));
        // The image's binary is a host path already: a mount at a prefix of it (`/tmp`)
        // must not move it.
        let binary_text = binary.to_string_lossy();
        let argv: Vec<String> = argv
            .iter()
            .enumerate()
            .map(|(i, a)| {
                if i == 0 && *a == binary_text {
                    a.clone()
                } else {
                    rewrite(a)
                }
            })
            .collect();

        let mut command = self.netns.command(&argv[0]);
        command.args(&argv[1..]).env_clear().current_dir(&self.dir);
        command.env("PATH", std::env::var_os("PATH").unwrap_or_default());
        command.env("HOSTNAME", &self.name);
        for (key, value) in &env {
            // KUBECONFIG is the harness's own host path, not a path in the container: a
            // mount at a prefix of it (`/tmp`) must not rewrite it.
            let value = if key == "KUBECONFIG" {
                value.clone()
            } else {
                rewrite(value)
            };
            command.env(key, value);
        }
        let log = self.dir.join(format!("{}.log", container.name));
        Daemon::spawn(
            &format!("{}/{}/{}", self.namespace, self.name, container.name),
            &mut command,
            &log,
        )
    }

    /// The container's environment: what the kubelet adds (in-cluster API access),
    /// then `env` in order, `$(VAR)` expanded against what came before.
    fn env(&self, container: &Container) -> Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        env.insert("KUBERNETES_SERVICE_HOST".to_owned(), "127.0.0.1".to_owned());
        env.insert(
            "KUBERNETES_SERVICE_PORT".to_owned(),
            API_FORWARD_PORT.to_string(),
        );
        if self.service_account_dir().is_some() {
            env.insert(
                "KUBECONFIG".to_owned(),
                self.dir.join("kubeconfig").to_string_lossy().into_owned(),
            );
        }
        env.insert("RUST_BACKTRACE".to_owned(), "1".to_owned());
        for var in container.env.iter().flatten() {
            let value = if let Some(value) = &var.value {
                expand_vars(value, &env)
            } else if let Some(from) = &var.value_from {
                let field = from
                    .field_ref
                    .as_ref()
                    .map(|f| f.field_path.as_str())
                    .with_context(|| {
                        format!("env {}: only valueFrom.fieldRef is supported", var.name)
                    })?;
                volumes::field_value(&self.pod, &self.ip.to_string(), field)?
            } else {
                String::new()
            };
            env.insert(var.name.clone(), value);
        }
        Ok(env)
    }

    /// Restarts a container whose process has exited (restartPolicy Always).
    pub fn restart(&mut self, node: &Node<'_>, index: usize) -> Result<()> {
        let spec = self.containers[index].spec.clone();
        let process = self.spawn(node, &spec)?;
        let c = &mut self.containers[index];
        c.process = process;
        c.restarts += 1;
        c.ready = false;
        c.successes = 0;
        c.failures = 0;
        c.exit_code = None;
        c.started_at = SystemTime::now();
        c.next_probe = Instant::now();
        self.dirty = true;
        Ok(())
    }

    /// Stops the pod as the kubelet does on deletion: SIGTERM to the app containers,
    /// then to the sidecars once those have exited, SIGKILL to whatever is left at the
    /// end of `grace`; then the forwarder, the namespace and the files go.
    pub fn stop(mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        for sidecars in [false, true] {
            for c in self.containers.iter_mut().filter(|c| c.sidecar == sidecars) {
                c.process.signal(Signal::TERM);
            }
            for c in self.containers.iter_mut().filter(|c| c.sidecar == sidecars) {
                let left = deadline.saturating_duration_since(Instant::now());
                c.process.wait_exit(left);
            }
        }
        for c in &mut self.containers {
            c.process.kill();
        }
        self.forward.kill();
    }
}

impl RunningContainer {
    fn new(spec: &Container, sidecar: bool, process: Daemon) -> RunningContainer {
        let delay = spec
            .readiness_probe
            .as_ref()
            .and_then(|p| p.initial_delay_seconds)
            .unwrap_or(0);
        RunningContainer {
            spec: spec.clone(),
            sidecar,
            process,
            restarts: 0,
            ready: spec.readiness_probe.is_none(),
            started_at: SystemTime::now(),
            successes: 0,
            failures: 0,
            next_probe: Instant::now() + Duration::from_secs(delay.max(0) as u64),
            exit_code: None,
        }
    }
}

/// Expands `$(VAR)` from `env`; `$$(VAR)` stays literal `$(VAR)`, unknown names stay.
pub fn expand_vars(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(close) = tail.strip_prefix("$(").and_then(|t| t.find(')')) {
            let name = &tail[2..2 + close];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&tail[..3 + close]),
            }
            rest = &tail[3 + close..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// A readable tag for the pod's namespace name (`ip netns list`).
fn short(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(24)
        .collect()
}

/// Replaces each mount path in `value` by its host directory, in one pass: only where
/// a path starts (the value's start, or after a character no path has, such as `=` or
/// `,`) and ends (a `/` or such a character follows), longest mount first, and never
/// inside text already replaced (host directories start with `/tmp`, a common mount).
fn rewrite_paths(value: &str, mounts: &[(String, PathBuf)]) -> String {
    let in_path = |c: char| c.is_alphanumeric() || matches!(c, '/' | '.' | '_' | '-');
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    'scan: while let Some(next) = rest.chars().next() {
        if !out.ends_with(in_path) {
            for (path, host) in mounts {
                let Some(after) = rest.strip_prefix(path.as_str()) else {
                    continue;
                };
                if after.is_empty() || after.starts_with('/') || !after.starts_with(in_path) {
                    out.push_str(&host.to_string_lossy());
                    rest = after;
                    continue 'scan;
                }
            }
        }
        out.push(next);
        rest = &rest[next.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_rewritten_once_and_only_where_a_path_is() {
        let mounts = vec![
            (
                "/var/run/weft/token".to_owned(),
                PathBuf::from("/tmp/pod/volumes/weft-token"),
            ),
            ("/tmp".to_owned(), PathBuf::from("/tmp/pod/volumes/tmp")),
        ];
        let cases = [
            (
                "/var/run/weft/token/token",
                "/tmp/pod/volumes/weft-token/token",
            ),
            ("--dir=/tmp", "--dir=/tmp/pod/volumes/tmp"),
            ("/tmp/x,/tmp", "/tmp/pod/volumes/tmp/x,/tmp/pod/volumes/tmp"),
            ("/tmpfile", "/tmpfile"),
            ("/var/tmp/x", "/var/tmp/x"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
        ];
        for (value, want) in cases {
            assert_eq!(rewrite_paths(value, &mounts), want, "{value}");
        }
    }
}
