//! One watch per kind of Kubernetes object: a reflector (a cache of every object,
//! kept current by a watch that re-lists after any gap) that moves the store's
//! revision after each change it applies.
//!
//! The revision is the highest `resourceVersion` seen. Kubernetes documents it as
//! opaque, but it is the revision of the API server's etcd: one counter for the whole
//! cluster that only grows. Using it, rather than a count of our own, gives every
//! replica of the control plane the same versions for the same objects, so a proxy
//! that moves to another replica is sent nothing it already holds.

use std::fmt::Debug;
use std::hash::Hash;

use futures::StreamExt;
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// A Kubernetes object's `resourceVersion` as a number (0 when absent or not one).
pub fn resource_version<K: Resource>(object: &K) -> u64 {
    object
        .meta()
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Moves `revision` past `seen`, and by one at least, so that every change wakes the
/// view even when an object comes back with an older version (a re-list after a gap).
pub fn bump(revision: &watch::Sender<u64>, seen: u64) {
    revision.send_modify(|current| *current = seen.max(*current + 1));
}

/// Starts watching `api`: returns the cache, filled and kept current by a task that
/// runs until the process ends. `slim` drops what Weft does not read from each object
/// before it is cached (a Pod's spec is most of its size).
pub fn start<K>(
    api: Api<K>,
    dynamic: K::DynamicType,
    revision: watch::Sender<u64>,
    what: &'static str,
    slim: fn(&mut K),
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let writer = Writer::new(dynamic);
    let cache = writer.as_reader();
    tokio::spawn(async move {
        let events = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(slim);
        let mut events = std::pin::pin!(reflector::reflector(writer, events));
        // Objects of a (re-)list are applied to the cache together at InitDone.
        let mut listed = 0;
        let mut failing = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Apply(object) | Event::Delete(object)) => {
                    bump(&revision, resource_version(&object));
                }
                Ok(Event::Init) => listed = 0,
                Ok(Event::InitApply(object)) => listed = listed.max(resource_version(&object)),
                Ok(Event::InitDone) => {
                    if failing {
                        tracing::info!(what, "watching again");
                        failing = false;
                    }
                    bump(&revision, listed);
                }
                Err(error) => {
                    // The watcher backs off and re-lists by itself; say it once per outage.
                    if !failing {
                        tracing::warn!(what, %error, "watch failed; retrying");
                        failing = true;
                    }
                }
            }
        }
    });
    cache
}

/// [`start`] for a custom resource (Weft's CRDs, the Gateway API's routes), read
/// without its managed fields.
pub fn start_dynamic(
    client: &Client,
    resource: ApiResource,
    revision: &watch::Sender<u64>,
    what: &'static str,
) -> Store<DynamicObject> {
    start(
        Api::<DynamicObject>::all_with(client.clone(), &resource),
        resource,
        revision.clone(),
        what,
        |object: &mut DynamicObject| object.metadata.managed_fields = None,
    )
}
