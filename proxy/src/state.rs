//! State shared between the discovery client, the admin server and the data path.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::config::Config;
use crate::identity::IdentityState;
use crate::local::Local;
use crate::snapshot::Snapshot;

/// The control-plane connection as operators see it in `/config_dump`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Connection {
    pub state: ConnectionState,
    /// The address of the replica currently connected to, if any.
    pub peer: Option<String>,
    pub last_error: Option<String>,
    pub reconnects: u64,
    /// Resources rejected in the last push, with the reason.
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    #[default]
    Connecting,
    Connected,
    Disconnected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub type_url: String,
    pub name: String,
    pub version: u64,
    pub message: String,
}

/// Where the config being served came from, as `/config_dump` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigSource {
    /// Nothing applied yet.
    #[default]
    None,
    ControlPlane,
    /// Loaded from `--state-dir` at start, the control plane not reached since.
    StateDir,
    /// `--static-config`: never from a control plane.
    StaticFile,
}

/// The state of the workload this proxy fronts, reported on the discovery stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadHealth {
    Healthy,
    /// The active health check failed; the reason is for operators.
    Unhealthy(String),
    /// Shutting down: the endpoint must leave every view now.
    Draining,
}

impl WorkloadHealth {
    pub fn as_str(&self) -> &'static str {
        match self {
            WorkloadHealth::Healthy => "healthy",
            WorkloadHealth::Unhealthy(_) => "unhealthy",
            WorkloadHealth::Draining => "draining",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            WorkloadHealth::Unhealthy(reason) => reason,
            _ => "",
        }
    }
}

/// What the data path knows of endpoints beyond what the control plane says, read
/// by `/config_dump` (and so by `weftctl explain --proxy`).
pub trait EndpointStates: Send + Sync {
    /// The endpoints out of rotation now, by (service, address): `ejected` by
    /// outlier detection or `unreachable` when last dialled.
    fn out_of_rotation(&self) -> BTreeMap<(String, String), &'static str>;
}

pub struct Shared {
    pub config: Config,
    /// The latest snapshot, published by the discovery client (or a static file).
    pub snapshot: watch::Sender<Arc<Snapshot>>,
    /// The snapshot the data path's routing tables were last rebuilt from: set by
    /// the registry after its swap, so what `/config_dump` shows is what requests
    /// see, and an ACK can wait for it.
    pub applied: watch::Sender<Arc<Snapshot>>,
    /// The data path's live endpoint states, once it runs. Weak: the admin server
    /// must not keep a stopped data path alive.
    pub endpoint_states: OnceLock<Weak<dyn EndpointStates>>,
    /// The local workload the data path applies, published by the registry after
    /// each snapshot (for `/config_dump`).
    pub local: watch::Sender<Arc<Local>>,
    /// Set once the first config has been applied; never cleared (static stability:
    /// losing the control plane does not make a proxy unready).
    pub configured: AtomicBool,
    // A std Mutex: held for a copy or an assignment, never across an await.
    pub connection: Mutex<Connection>,
    /// The certificate, key and roots; empty while identity is disabled or pending.
    pub identity: IdentityState,
    /// Where the served config came from; stale while it is the state directory's.
    // A std Mutex: read and written whole, never across an await.
    pub source: Mutex<ConfigSource>,
    /// Set by the health checker and by the drain; the discovery client reports
    /// every change. Draining is final: the checker never overrides it.
    pub workload_health: watch::Sender<WorkloadHealth>,
    /// Who taps the data path's requests (`GET /tap`).
    pub tap: Arc<crate::tap::Hub>,
    /// The trace collectors this proxy's services send spans to.
    pub trace: crate::trace::Collectors,
    /// Where sampled requests' access log lines go (stdout).
    pub access_log: Arc<crate::access_log::Writer>,
}

impl Shared {
    pub fn new(config: Config) -> Arc<Shared> {
        let (snapshot, _) = watch::channel(Arc::new(Snapshot::default()));
        let identity = IdentityState::new(config.identity.is_some());
        Arc::new(Shared {
            identity,
            snapshot,
            applied: watch::channel(Arc::new(Snapshot::default())).0,
            endpoint_states: OnceLock::new(),
            local: watch::channel(Arc::new(Local::default())).0,
            configured: AtomicBool::new(false),
            connection: Mutex::new(Connection::default()),
            source: Mutex::new(ConfigSource::None),
            workload_health: watch::channel(WorkloadHealth::Healthy).0,
            tap: Arc::new(crate::tap::Hub::new()),
            trace: crate::trace::Collectors::default(),
            access_log: Arc::new(crate::access_log::Writer::new(!config.no_access_log)),
            config,
        })
    }

    /// Ready once configured and, when identity is on, certified: a proxy that
    /// cannot do mTLS yet must not receive traffic (as in Linkerd). Like
    /// `configured`, a certificate once held keeps the proxy ready while renewals
    /// fail; the manager keeps retrying.
    pub fn is_ready(&self) -> bool {
        self.not_ready_reason().is_none()
    }

    pub fn not_ready_reason(&self) -> Option<&'static str> {
        // Kubernetes takes a draining pod out of its Services as well.
        if *self.workload_health.borrow() == WorkloadHealth::Draining {
            return Some("draining");
        }
        if !self.configured.load(Ordering::Acquire) {
            return Some("no configuration received yet");
        }
        if self.identity.enabled && self.identity.current().is_none() {
            return Some("no certificate yet");
        }
        None
    }

    /// Waits until the data path routes by `snapshot`, or until a newer snapshot
    /// replaced it before it was applied, at most `limit`. False when the limit
    /// passed (a data path that is not running, or wedged).
    pub async fn wait_applied(&self, snapshot: &Arc<Snapshot>, limit: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        let done = applied.wait_for(|now| {
            Arc::ptr_eq(now, snapshot) || !Arc::ptr_eq(&*self.snapshot.borrow(), snapshot)
        });
        let in_force = matches!(tokio::time::timeout(limit, done).await, Ok(Ok(_)));
        in_force
    }

    /// The data path's endpoints out of rotation; empty while it does not run.
    pub fn out_of_rotation(&self) -> BTreeMap<(String, String), &'static str> {
        self.endpoint_states
            .get()
            .and_then(Weak::upgrade)
            .map(|states| states.out_of_rotation())
            .unwrap_or_default()
    }

    pub fn source(&self) -> ConfigSource {
        self.source.lock().map(|s| *s).unwrap_or_default()
    }

    /// The config served did not come from a live control plane since start.
    pub fn is_stale(&self) -> bool {
        self.source() == ConfigSource::StateDir
    }

    pub fn set_source(&self, source: ConfigSource) {
        if let Ok(mut current) = self.source.lock() {
            *current = source;
        }
        metrics::gauge!("weft_config_stale").set(if source == ConfigSource::StateDir {
            1.0
        } else {
            0.0
        });
    }

    /// Reports a health check's verdict, unless the proxy is draining.
    pub fn set_workload_health(&self, health: WorkloadHealth) {
        self.workload_health.send_if_modified(|current| {
            if *current == WorkloadHealth::Draining || *current == health {
                return false;
            }
            *current = health;
            true
        });
    }

    pub fn connection(&self) -> Connection {
        self.connection
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    pub fn update_connection(&self, update: impl FnOnce(&mut Connection)) {
        if let Ok(mut c) = self.connection.lock() {
            update(&mut c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn shared() -> Arc<Shared> {
        let args = crate::config::Args::parse_from(["weft-proxy"]);
        Shared::new(Config::from_args(args).expect("default config"))
    }

    #[tokio::test(start_paused = true)]
    async fn an_ack_waits_for_the_data_path_to_apply_the_snapshot() {
        let shared = shared();
        let pushed = Arc::new(Snapshot::default());
        shared.snapshot.send_replace(pushed.clone());
        let applier = {
            let shared = shared.clone();
            let pushed = pushed.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                shared.applied.send_replace(pushed);
            })
        };
        let started = tokio::time::Instant::now();
        assert!(shared.wait_applied(&pushed, Duration::from_secs(2)).await);
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        applier.await.expect("applier");
        // Already applied: no wait.
        assert!(shared.wait_applied(&pushed, Duration::from_secs(2)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replaced_snapshot_is_not_waited_for_and_a_stalled_data_path_times_out() {
        let shared = shared();
        let first = Arc::new(Snapshot::default());
        shared.snapshot.send_replace(first.clone());
        shared.snapshot.send_replace(Arc::new(Snapshot::default()));
        assert!(shared.wait_applied(&first, Duration::from_secs(2)).await);

        let stalled = Arc::new(Snapshot::default());
        shared.snapshot.send_replace(stalled.clone());
        let started = tokio::time::Instant::now();
        assert!(!shared.wait_applied(&stalled, Duration::from_secs(2)).await);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
