//! State shared between the discovery client, the admin server and the data path.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;

use crate::config::Config;
use crate::identity::IdentityState;
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

pub struct Shared {
    pub config: Config,
    pub snapshot: watch::Sender<Arc<Snapshot>>,
    /// Set once the first config has been applied; never cleared (static stability:
    /// losing the control plane does not make a proxy unready).
    pub configured: AtomicBool,
    // A std Mutex: held for a copy or an assignment, never across an await.
    pub connection: Mutex<Connection>,
    /// The certificate, key and roots; empty while identity is disabled or pending.
    pub identity: IdentityState,
}

impl Shared {
    pub fn new(config: Config) -> Arc<Shared> {
        let (snapshot, _) = watch::channel(Arc::new(Snapshot::default()));
        let identity = IdentityState::new(config.identity.is_some());
        Arc::new(Shared {
            identity,
            config,
            snapshot,
            configured: AtomicBool::new(false),
            connection: Mutex::new(Connection::default()),
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
        if !self.configured.load(Ordering::Acquire) {
            return Some("no configuration received yet");
        }
        if self.identity.enabled && self.identity.current().is_none() {
            return Some("no certificate yet");
        }
        None
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
