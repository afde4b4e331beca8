//! The proxies connected to this replica: who they are and how far each is in sync,
//! for `weftctl status`. Their workloads' registrations are kept by
//! [`crate::discovery::registration`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use weft_proto::resource::Kind;
use weft_proto::v1;

/// How far one proxy is in sync for one resource type.
#[derive(Debug, Clone, Default)]
pub struct TypeSync {
    pub acked_version: u64,
    pub latest_version: u64,
    pub pending_pushes: u32,
    /// Rejected resources still unresolved: name -> (version, message).
    pub rejected: BTreeMap<String, (u64, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct Sync {
    pub types: BTreeMap<Kind, TypeSync>,
    /// The view has moved on and this proxy has not been pushed it yet.
    pub behind: bool,
}

pub struct Proxy {
    pub stream_id: u64,
    pub node_id: String,
    pub workload: Option<v1::Workload>,
    pub build: String,
    /// The proxy's admin endpoint as its Hello announced it ("" if unknown).
    pub admin_address: String,
    pub connected_at: i64,
    // A std Mutex: updates are plain assignments, never held across an await.
    pub sync: Mutex<Sync>,
    /// The workload's state as last reported ("", "healthy", "unhealthy", "draining"),
    /// for `weftctl status`.
    pub health: Mutex<String>,
}

impl Proxy {
    pub fn update(&self, change: impl FnOnce(&mut Sync)) {
        if let Ok(mut sync) = self.sync.lock() {
            change(&mut sync);
        }
    }

    pub fn set_health(&self, health: &str) {
        if let Ok(mut current) = self.health.lock() {
            health.clone_into(&mut current);
        }
    }

    pub fn status(&self) -> v1::ProxyStatus {
        let sync = self.sync.lock().map(|s| s.clone()).unwrap_or_default();
        let health = self.health.lock().map(|h| h.clone()).unwrap_or_default();
        let mut state = v1::proxy_status::SyncState::Synced;
        let mut types = Vec::new();
        for (kind, t) in &sync.types {
            if !t.rejected.is_empty() {
                state = v1::proxy_status::SyncState::Nacked;
            } else if (t.pending_pushes > 0 || sync.behind)
                && state != v1::proxy_status::SyncState::Nacked
            {
                state = v1::proxy_status::SyncState::Stale;
            }
            let last_nack = t
                .rejected
                .iter()
                .map(|(name, (version, message))| format!("{name}@{version}: {message}"))
                .collect::<Vec<_>>()
                .join("; ");
            types.push(v1::TypeSyncStatus {
                type_url: kind.type_url().to_owned(),
                acked_version: t.acked_version,
                latest_version: t.latest_version,
                pending_pushes: t.pending_pushes,
                last_nack,
            });
        }
        v1::ProxyStatus {
            id: self.node_id.clone(),
            workload: self.workload.clone().map(|mut w| {
                w.health = health;
                w
            }),
            build: self.build.clone(),
            connected_at: self.connected_at,
            state: state as i32,
            types,
            admin_address: self.admin_address.clone(),
        }
    }
}

pub struct Registry {
    next_stream: AtomicU64,
    // std Mutex: short critical sections, never across an await.
    proxies: Mutex<HashMap<u64, Arc<Proxy>>>,
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry {
            next_stream: AtomicU64::new(1),
            proxies: Mutex::new(HashMap::new()),
        })
    }

    pub fn connect(&self, node: &v1::Node) -> Arc<Proxy> {
        let stream_id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let connected_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let workload = node.workload.clone().filter(|w| !w.service.is_empty());
        let proxy = Arc::new(Proxy {
            stream_id,
            node_id: node.id.clone(),
            health: Mutex::new(
                workload
                    .as_ref()
                    .map(|w| w.health.clone())
                    .unwrap_or_default(),
            ),
            workload,
            build: node.build.clone(),
            admin_address: node.admin_address.clone(),
            connected_at,
            sync: Mutex::new(Sync::default()),
        });
        if let Ok(mut proxies) = self.proxies.lock() {
            proxies.insert(stream_id, proxy.clone());
        }
        proxy
    }

    pub fn disconnect(&self, proxy: &Proxy) {
        if let Ok(mut proxies) = self.proxies.lock() {
            proxies.remove(&proxy.stream_id);
        }
    }

    pub fn statuses(&self) -> Vec<v1::ProxyStatus> {
        let proxies: Vec<Arc<Proxy>> = self
            .proxies
            .lock()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        let mut statuses: Vec<_> = proxies.iter().map(|p| p.status()).collect();
        statuses.sort_by(|a, b| a.id.cmp(&b.id));
        statuses
    }
}
