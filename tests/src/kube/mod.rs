//! A real Kubernetes control plane for the end-to-end tests, where only the kubelet is
//! played by the harness.
//!
//! - `Cluster` (cluster.rs): etcd, kube-apiserver and kube-controller-manager built
//!   from one pinned release by `tests/scripts/k8s-binaries.sh`, on loopback ports.
//! - `Kubelet` (kubelet.rs): a Node that binds Pods to itself and runs each as a network
//!   namespace on a shared LAN (pod.rs), its containers as local binaries (spawn.rs)
//!   through their life (lifecycle.rs: init containers, native sidecars, probes,
//!   restarts, Jobs), and reports their status as a kubelet does (status.rs); tests
//!   read `PodInfo` snapshots (info.rs).
//! - `weft-netns-forward` (src/bin): how processes in a pod reach the API server on the
//!   host's loopback, and (expose.rs) how the API server and the test reach pods.
//!
//! - `install_gateway_api` (gateway.rs): the Gateway API's standard CRDs, fetched by
//!   `tests/scripts/gateway-api-crds.sh`.
//!
//! The binaries come from `$WEFT_K8S_BIN` (tests/run.sh sets it) or, when that is
//! unset, from running the build script here (cached after its first run). A test that
//! cannot get them fails with the reason.

mod cluster;
mod container;
mod daemon;
mod expose;
mod gateway;
mod images;
mod info;
mod kubelet;
mod lifecycle;
mod pki;
mod pod;
mod probe;
mod spawn;
mod status;
mod sync;
mod volumes;
pub mod weft;

pub use cluster::{Cluster, StartTimes, SERVICE_ACCOUNT_ISSUER, SERVICE_CIDR};
pub use daemon::Daemon;
pub use expose::{expose, Exposed};
pub use gateway::install_gateway_api;
pub use images::Images;
pub use info::{ContainerInfo, ContainerKind, PodInfo, PodPhase};
pub use kubelet::{Kubelet, KubeletOptions};
pub use pki::{CertFiles, Pki};
pub use pod::{API_FORWARD_PORT, SERVICE_ACCOUNT_DIR};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

/// The directory with kube-apiserver, kube-controller-manager, kubectl and etcd.
pub fn binaries() -> Result<PathBuf> {
    // Tests of one binary run in parallel threads: build (or look up) once.
    static BIN: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut bin = BIN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(dir) = bin.as_ref() {
        return Ok(dir.clone());
    }
    let dir = match std::env::var_os("WEFT_K8S_BIN") {
        Some(dir) => PathBuf::from(dir),
        None => build()?,
    };
    for tool in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kubectl",
    ] {
        if !dir.join(tool).is_file() {
            bail!(
                "{tool} is missing from {} (WEFT_K8S_BIN or tests/scripts/k8s-binaries.sh)",
                dir.display()
            );
        }
    }
    *bin = Some(dir.clone());
    Ok(dir)
}

/// Runs the build script (cached after its first run) and returns its last line.
fn build() -> Result<PathBuf> {
    eprintln!("WEFT_K8S_BIN is unset: running tests/scripts/k8s-binaries.sh (the first build takes about 10 minutes)");
    run_script("k8s-binaries.sh")
}

/// Runs `tests/scripts/<name>` and returns the directory it prints as its last line.
pub(crate) fn run_script(name: &str) -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name);
    let output = Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    if !output.status.success() {
        bail!("{} failed ({})", script.display(), output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().last() {
        Some(line) if !line.trim().is_empty() => Ok(PathBuf::from(line.trim())),
        _ => bail!("{} printed no directory", script.display()),
    }
}
