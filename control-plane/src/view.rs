//! The view served to proxies: every resource with the version at which its served
//! content last changed.
//!
//! Stored resources are served as stored, but for the control plane's defaults
//! ([`telemetry`]: the trace collector of a service that traces without naming one).
//! Endpoints are the union of the statically
//! declared ones (from `weftctl apply`) and the workloads registered by live proxies,
//! so a service's Endpoints resource changes when a proxy comes or goes.
//!
//! Versions: a resource keeps its version while its encoded content is unchanged.
//! When it changes, it takes the newest version among its parts (a record's or a
//! registration's); when that is not newer than what was served (a registration was
//! removed), it takes the store revision the view was built at. Both only grow, and
//! a rebuilt view after a restart gives unchanged resources the versions proxies
//! already hold, so reconnecting proxies are sent nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use prost_types::Any;
use tokio::sync::watch;
use weft_proto::resource::Kind;
use weft_proto::v1;

use crate::health::{self, Unhealthy};
use crate::store::{Contents, Store};

pub use self::telemetry::Defaults;

mod telemetry;

/// One served resource. Cheap to clone: the body is shared.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub version: u64,
    pub body: Arc<Any>,
}

/// The resources of one kind, by name, sorted (discovery diffs walk two of these in step).
pub type TypeView = BTreeMap<Arc<str>, Entry>;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// The store revision this view was built from.
    pub revision: u64,
    pub types: BTreeMap<Kind, Arc<TypeView>>,
    /// How each type differs from the previous view's, computed once per rebuild so
    /// that a proxy which held the previous view is diffed in O(changes), not O(mesh).
    pub deltas: BTreeMap<Kind, Arc<Delta>>,
    /// The highest version of each kind, computed once per rebuild: every stream
    /// reports it after every push and ACK, and walking the mesh there made status
    /// reporting the largest CPU cost of a push.
    latest: BTreeMap<Kind, u64>,
}

/// The change from one type view to the next.
#[derive(Debug, Default, PartialEq)]
pub struct Delta {
    pub from: Arc<TypeView>,
    pub changed: Vec<Arc<str>>,
    pub removed: Vec<Arc<str>>,
}

impl View {
    pub fn of(&self, kind: Kind) -> Arc<TypeView> {
        self.types.get(&kind).cloned().unwrap_or_default()
    }

    pub fn delta(&self, kind: Kind) -> Option<&Delta> {
        self.deltas.get(&kind).map(|d| d.as_ref())
    }

    /// The highest version among the resources of a kind (0 when there are none).
    pub fn latest_version(&self, kind: Kind) -> u64 {
        self.latest.get(&kind).copied().unwrap_or(0)
    }
}

/// A resource's content and the newest version among its parts.
struct Built {
    body: Any,
    parts_version: u64,
}

/// Builds the view from the store's contents. `previous` is the view currently served
/// (None at start-up).
/// `defaults`: the control plane's, filled into what is served.
pub fn build(contents: &Contents, previous: Option<&View>, defaults: &Defaults) -> View {
    build_checked(contents, previous, &BTreeSet::new(), defaults)
}

/// Like [`build`], with the declared endpoints the control plane's health checks
/// find unhealthy marked so in the served Endpoints.
pub fn build_checked(
    contents: &Contents,
    previous: Option<&View>,
    unhealthy: &BTreeSet<health::Target>,
    defaults: &Defaults,
) -> View {
    let mut built: BTreeMap<Kind, BTreeMap<String, Built>> = BTreeMap::new();
    for kind in Kind::ALL {
        built.insert(kind, BTreeMap::new());
    }
    for record in &contents.records {
        if let Some(of_kind) = built.get_mut(&record.kind) {
            let value = match record.kind {
                Kind::Endpoints => mark_unhealthy(&record.name, &record.body, unhealthy),
                Kind::Service => telemetry::fill_collector(&record.body, defaults),
                _ => record.body.clone(),
            };
            of_kind.insert(
                record.name.clone(),
                Built {
                    body: Any {
                        type_url: record.kind.type_url().to_owned(),
                        value,
                    },
                    parts_version: record.version,
                },
            );
        }
    }
    merge_registrations(contents, built.entry(Kind::Endpoints).or_default());

    let mut types = BTreeMap::new();
    let mut deltas = BTreeMap::new();
    for (kind, resources) in built {
        let before = previous.map(|p| p.of(kind));
        let mut view = TypeView::new();
        for (name, resource) in resources {
            let old = before.as_ref().and_then(|b| b.get(name.as_str()));
            let version = match old {
                Some(old) if old.body.value == resource.body.value => old.version,
                Some(old) if resource.parts_version <= old.version => {
                    contents.revision.max(old.version + 1)
                }
                _ => resource.parts_version,
            };
            let body = match old {
                Some(old) if old.version == version => old.body.clone(),
                _ => Arc::new(resource.body),
            };
            view.insert(Arc::from(name), Entry { version, body });
        }
        match before {
            // Unchanged: keep the very same map, which proxies compare by pointer.
            Some(before) if *before == view => {
                types.insert(kind, before);
            }
            Some(before) => {
                deltas.insert(kind, Arc::new(delta(&before, &view)));
                types.insert(kind, Arc::new(view));
            }
            None => {
                types.insert(kind, Arc::new(view));
            }
        }
    }
    let latest = types
        .iter()
        .map(|(kind, view)| (*kind, view.values().map(|e| e.version).max().unwrap_or(0)))
        .collect();
    View {
        revision: contents.revision,
        types,
        deltas,
        latest,
    }
}

fn delta(from: &Arc<TypeView>, to: &TypeView) -> Delta {
    let changed = to
        .iter()
        .filter(|(name, entry)| from.get(*name).map(|e| e.version) != Some(entry.version))
        .map(|(name, _)| name.clone())
        .collect();
    let removed = from
        .keys()
        .filter(|name| !to.contains_key(*name))
        .cloned()
        .collect();
    Delta {
        from: from.clone(),
        changed,
        removed,
    }
}

/// The encoded Endpoints with the endpoints in `unhealthy` marked so; the same
/// bytes when none is (the common case costs no decoding).
fn mark_unhealthy(name: &str, body: &[u8], unhealthy: &BTreeSet<health::Target>) -> Vec<u8> {
    let first = (name.to_owned(), SocketAddr::from(([0, 0, 0, 0], 0)));
    if unhealthy
        .range(first..)
        .next()
        .is_none_or(|(n, _)| n != name)
    {
        return body.to_vec();
    }
    let Ok(mut message) = v1::Endpoints::decode(body) else {
        return body.to_vec();
    };
    for endpoint in &mut message.endpoints {
        let address = endpoint
            .address
            .parse::<IpAddr>()
            .ok()
            .zip(u16::try_from(endpoint.port).ok())
            .map(|(ip, port)| SocketAddr::new(ip, port));
        if address.is_some_and(|a| unhealthy.contains(&(name.to_owned(), a))) {
            endpoint.health = "unhealthy".to_owned();
        }
    }
    message.encode_to_vec()
}

/// Adds each registered workload as endpoints of its service, after the static ones.
fn merge_registrations(contents: &Contents, endpoints: &mut BTreeMap<String, Built>) {
    let mut registered: BTreeMap<String, Vec<(u64, v1::Workload)>> = BTreeMap::new();
    for registration in &contents.registrations {
        // Registrations were validated before they were stored; one that no longer
        // decodes is skipped rather than poisoning the whole view.
        let Ok(workload) = v1::Workload::decode(registration.workload.as_slice()) else {
            tracing::warn!(node = %registration.node_id, "skipping undecodable registration");
            continue;
        };
        let service = format!("{}/{}", workload.namespace, workload.service);
        registered
            .entry(service)
            .or_default()
            .push((registration.version, workload));
    }
    for (service, workloads) in registered {
        let (mut message, mut parts_version) = match endpoints.get(&service) {
            Some(existing) => (
                v1::Endpoints::decode(existing.body.value.as_slice()).unwrap_or_default(),
                existing.parts_version,
            ),
            None => {
                let (namespace, name) = service.split_once('/').unwrap_or(("", &service));
                (
                    v1::Endpoints {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                        endpoints: Vec::new(),
                    },
                    0,
                )
            }
        };
        for (version, workload) in workloads {
            parts_version = parts_version.max(version);
            for port in &workload.ports {
                message.endpoints.push(v1::Endpoint {
                    address: workload.address.clone(),
                    port: port.port,
                    port_name: port.name.clone(),
                    weight: workload.weight.max(1),
                    locality: workload.locality.clone(),
                    labels: workload.labels.clone(),
                    // Only a failed active check marks a registered endpoint; a
                    // draining workload was deregistered, not marked.
                    health: if workload.health == "unhealthy" {
                        workload.health.clone()
                    } else {
                        String::new()
                    },
                    identity: workload.identity.clone(),
                });
            }
        }
        endpoints.insert(
            service,
            Built {
                body: Any {
                    type_url: Kind::Endpoints.type_url().to_owned(),
                    value: message.encode_to_vec(),
                },
                parts_version,
            },
        );
    }
}

/// Rebuilds the view after store changes, waiting `debounce` after the first change
/// so that a burst of writes becomes one rebuild and one push per proxy.
///
/// A change of the health checks' verdicts on declared endpoints rebuilds it too.
/// `considered`: the store revision of the last rebuild, published after the view
/// (which is only replaced when it changed), so a reader that waits for a revision
/// then reads a view at least that recent.
pub async fn maintain(
    store: Arc<dyn Store>,
    debounce: Duration,
    view: watch::Sender<Arc<View>>,
    mut unhealthy: watch::Receiver<Unhealthy>,
    considered: watch::Sender<u64>,
    defaults: Defaults,
) {
    let mut revision = store.revision();
    let mut checks_running = true;
    loop {
        tokio::select! {
            changed = revision.changed() => if changed.is_err() { return },
            changed = unhealthy.changed(), if checks_running => {
                // Without checks the verdicts stay as they were.
                checks_running = changed.is_ok();
                if !checks_running {
                    continue;
                }
            }
        }
        tokio::time::sleep(debounce).await;
        revision.borrow_and_update();
        let marked = unhealthy.borrow_and_update().clone();
        let mut delay = Duration::from_millis(50);
        let contents = loop {
            match store.contents().await {
                Ok(contents) => break contents,
                Err(e) => {
                    tracing::error!(error = %e, "reading the store for a new view failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        let current = view.borrow().clone();
        let next = build_checked(&contents, Some(&current), &marked, &defaults);
        let changed = next.types.iter().any(|(kind, map)| {
            !current
                .types
                .get(kind)
                .is_some_and(|old| Arc::ptr_eq(old, map))
        });
        let revision = next.revision;
        if changed {
            tracing::debug!(revision, "publishing a new view");
            view.send_replace(Arc::new(next));
        }
        considered.send_replace(revision);
    }
}

#[cfg(test)]
mod tests;
