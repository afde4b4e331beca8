//! A real Kubernetes control plane on loopback: etcd, kube-apiserver and
//! kube-controller-manager, each on free 127.0.0.1 ports, with a fresh PKI in a
//! temporary directory. Everything is killed and removed when the `Cluster` drops, also
//! when the test panics (then the tail of each log is printed).
//!
//! No kubelet, scheduler or kube-proxy runs: `Kubelet` (kubelet.rs) plays the node and
//! binds Pods itself, and ClusterIPs route nowhere.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use super::daemon::Daemon;
use super::pki::{kubeconfig_with_cert, Pki};

/// The controllers the tests need; node, cloud, volume, quota and certificate
/// controllers stay off (there are no real nodes or volumes).
const CONTROLLERS: &[&str] = &[
    "serviceaccount-token-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "disruption-controller",
];

/// The range ClusterIPs come from (never routed: there is no kube-proxy).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

/// The issuer of service-account tokens (and the default audience).
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// How long each component may take to come up on a busy 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long the parts took to come up (`Cluster::start`), for the report.
#[derive(Debug, Clone, Copy)]
pub struct StartTimes {
    pub etcd: Duration,
    pub apiserver: Duration,
    /// Until the controller-manager had made the `default` ServiceAccount and the
    /// `kube-root-ca.crt` ConfigMap (what a Pod needs), counted from the start.
    pub controller_manager: Duration,
}

pub struct Cluster {
    bin: PathBuf,
    pki: Pki,
    server: String,
    kubeconfig: PathBuf,
    rt: Arc<tokio::runtime::Runtime>,
    client: Client,
    // Dropped in field order: the controller-manager before the API server before etcd.
    controller_manager: Daemon,
    apiserver: Daemon,
    etcd: Daemon,
    pub start_times: StartTimes,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a cluster; panics with the reason (and the logs' tails) when it cannot.
    pub fn start() -> Cluster {
        match Cluster::try_start() {
            Ok(cluster) => cluster,
            Err(e) => panic!("cannot start the test Kubernetes cluster: {e:#}"),
        }
    }

    pub fn try_start() -> Result<Cluster> {
        let bin = super::binaries()?;
        let dir = tempfile::Builder::new().prefix("weft-k8s-").tempdir()?;
        let root = dir.path();
        let pki = Pki::generate(&root.join("pki"))?;
        let t0 = Instant::now();

        let (etcd_port, peer_port) = (crate::free_port(), crate::free_port());
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Daemon::spawn(
            "etcd",
            Command::new(bin.join("etcd")).args([
                "--name=default",
                &format!("--data-dir={}", root.join("etcd").display()),
                &format!("--listen-client-urls={etcd_url}"),
                &format!("--advertise-client-urls={etcd_url}"),
                &format!("--listen-peer-urls={peer_url}"),
                &format!("--initial-advertise-peer-urls={peer_url}"),
                &format!("--initial-cluster=default={peer_url}"),
                // A test cluster's data is thrown away; fsync only costs time.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ]),
            &root.join("etcd.log"),
        )?;
        wait_until(&mut etcd, "etcd /health", || {
            crate::http_get(crate::loopback(etcd_port), "/health")
                .is_ok_and(|(status, body)| status == 200 && body.contains("true"))
        })?;
        let etcd_up = t0.elapsed();

        let api_port = crate::free_port();
        let server = format!("https://127.0.0.1:{api_port}");
        let mut apiserver = Daemon::spawn(
            "kube-apiserver",
            Command::new(bin.join("kube-apiserver")).args([
                &format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                &format!("--secure-port={api_port}"),
                &format!("--cert-dir={}", root.join("pki").display()),
                &format!("--tls-cert-file={}", pki.apiserver.cert.display()),
                &format!("--tls-private-key-file={}", pki.apiserver.key.display()),
                &format!("--client-ca-file={}", pki.ca_cert.display()),
                &format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
                &format!("--service-account-key-file={}", pki.sa_pub.display()),
                &format!(
                    "--service-account-signing-key-file={}",
                    pki.sa_key.display()
                ),
                &format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--authorization-mode=Node,RBAC",
                // No node network: the `kubernetes` Service's endpoints stay empty
                // rather than naming 127.0.0.1, which pods could not reach anyway.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ]),
            &root.join("kube-apiserver.log"),
        )?;

        let kubeconfig = root.join("admin.kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig_with_cert(&server, &pki.ca_cert, &pki.admin, "admin"),
        )?;
        let rt = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("weft-k8s-client")
                .enable_all()
                .build()?,
        );
        let client = {
            let kubeconfig = kubeconfig.clone();
            on_thread(&rt, async move {
                let config = Config::from_custom_kubeconfig(
                    Kubeconfig::read_from(&kubeconfig)?,
                    &KubeConfigOptions::default(),
                )
                .await?;
                anyhow::Ok(Client::try_from(config)?)
            })?
        };
        wait_until(&mut apiserver, "kube-apiserver /readyz", || {
            let client = client.clone();
            on_thread(&rt, async move {
                let request = http::Request::get("/readyz").body(Vec::new())?;
                anyhow::Ok(client.request_text(request).await? == "ok")
            })
            .unwrap_or(false)
        })?;
        let apiserver_up = t0.elapsed();

        let kcm_kubeconfig = root.join("controller-manager.kubeconfig");
        std::fs::write(
            &kcm_kubeconfig,
            kubeconfig_with_cert(
                &server,
                &pki.ca_cert,
                &pki.controller_manager,
                "system:kube-controller-manager",
            ),
        )?;
        let mut controller_manager = Daemon::spawn(
            "kube-controller-manager",
            Command::new(bin.join("kube-controller-manager")).args([
                &format!("--kubeconfig={}", kcm_kubeconfig.display()),
                "--leader-elect=false",
                // Each controller acts as its own service account, with its own RBAC.
                "--use-service-account-credentials=true",
                &format!(
                    "--service-account-private-key-file={}",
                    pki.sa_key.display()
                ),
                &format!("--root-ca-file={}", pki.ca_cert.display()),
                &format!("--controllers={}", CONTROLLERS.join(",")),
                "--bind-address=127.0.0.1",
                &format!("--secure-port={}", crate::free_port()),
                &format!("--cert-dir={}", root.join("pki").display()),
                "--profiling=false",
            ]),
            &root.join("kube-controller-manager.log"),
        )?;
        // Up means: it has done what every Pod needs (the ServiceAccount admission
        // plugin refuses Pods without `default`; the kubelet mounts kube-root-ca.crt).
        wait_until(&mut controller_manager, "the controller-manager", || {
            let client = client.clone();
            on_thread(&rt, async move {
                let sa = Api::<ServiceAccount>::namespaced(client.clone(), "default")
                    .get_opt("default")
                    .await?;
                let ca = Api::<ConfigMap>::namespaced(client, "default")
                    .get_opt("kube-root-ca.crt")
                    .await?;
                anyhow::Ok(sa.is_some() && ca.is_some())
            })
            .unwrap_or(false)
        })?;
        let start_times = StartTimes {
            etcd: etcd_up,
            apiserver: apiserver_up,
            controller_manager: t0.elapsed(),
        };
        Ok(Cluster {
            bin,
            pki,
            server,
            kubeconfig,
            rt,
            client,
            controller_manager,
            apiserver,
            etcd,
            start_times,
            dir,
        })
    }

    /// The admin kubeconfig (`O=system:masters`), for kubectl and kube clients.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's URL, `https://127.0.0.1:PORT`.
    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn api_port(&self) -> u16 {
        self.server
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// The cluster CA, PEM (the API server's serving certificate chains to it).
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    pub fn ca_file(&self) -> &Path {
        &self.pki.ca_cert
    }

    /// The cluster's PKI files (admin and controller-manager client certificates, ...).
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The directory holding the cluster's files and logs (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where kube-apiserver, kube-controller-manager, etcd and kubectl live.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// An admin client. It runs on the cluster's own runtime, so it works from any
    /// runtime (or none, through `block_on`).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The runtime the cluster's clients (and the played kubelet) use.
    pub fn runtime(&self) -> Arc<tokio::runtime::Runtime> {
        self.rt.clone()
    }

    /// Runs `future` to completion on the cluster's runtime; callable from synchronous
    /// tests and from inside another runtime alike.
    pub fn block_on<T: Send>(&self, future: impl Future<Output = T> + Send) -> T {
        on_thread(&self.rt, future)
    }

    /// `kubectl --kubeconfig <admin> args...`, whatever its outcome.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run kubectl: {e}"))
    }

    /// `kubectl args...`, which must succeed; returns its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        checked(args, self.kubectl(args))
    }

    /// `kubectl args...` with `input` on stdin (e.g. `apply -f -`), which must succeed.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> String {
        checked(args, self.kubectl_with_input(args, input))
    }

    /// `kubectl args...` with `input` on stdin, whatever its outcome.
    pub fn kubectl_with_input(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run kubectl: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .unwrap_or_else(|e| panic!("feed kubectl: {e}"));
        }
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("run kubectl: {e}"))
    }

    /// `kubectl apply -f -` of a YAML (or JSON) text.
    pub fn apply(&self, manifest: &str) -> String {
        self.kubectl_stdin(&["apply", "-f", "-"], manifest)
    }

    fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.bin.join("kubectl"));
        command.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        command
    }

    /// Resident memory of each component in KiB: (name, KiB).
    pub fn rss_kib(&self) -> Vec<(String, u64)> {
        [&self.etcd, &self.apiserver, &self.controller_manager]
            .into_iter()
            .map(|d| (d.name.clone(), d.rss_kib().unwrap_or(0)))
            .collect()
    }

    /// The last `lines` lines of each component's log, for a failure message.
    pub fn log_tails(&self, lines: usize) -> String {
        [&self.etcd, &self.apiserver, &self.controller_manager]
            .into_iter()
            .map(|d| format!("---- {} ----\n{}\n", d.name, d.tail(lines)))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.controller_manager.kill();
        self.apiserver.kill();
        self.etcd.kill();
    }
}

/// Runs `future` on `rt` from a thread of its own, so that it works whether or not the
/// caller is itself inside a runtime.
pub(crate) fn on_thread<T: Send>(
    rt: &tokio::runtime::Runtime,
    future: impl Future<Output = T> + Send,
) -> T {
    std::thread::scope(|s| {
        s.spawn(|| rt.block_on(future))
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Polls `ready` until it holds; fails early, with the log's tail, when the process
/// exits, and after START_TIMEOUT.
fn wait_until(daemon: &mut Daemon, what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if ready() {
            return Ok(());
        }
        if !daemon.is_running() {
            bail!("{} exited before {what}:\n{}", daemon.name, daemon.tail(30));
        }
        if Instant::now() > deadline {
            bail!(
                "timed out after {START_TIMEOUT:?} waiting for {what}:\n{}",
                daemon.tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn checked(args: &[&str], output: Output) -> String {
    assert!(
        output.status.success(),
        "kubectl {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
