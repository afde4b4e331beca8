//! The grace period on paused time, with the interleavings that used to lose a
//! connected proxy's endpoint forced by holding the store's removals at a gate; and a
//! property test over interleavings of connects, reports, disconnects, expiries and
//! restarts against a model of who holds the registration.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use proptest::prelude::*;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use weft_proto::resource::Kind;

use super::*;
use crate::registry::Registry;
use crate::store::{Contents, EmbeddedStore, Outcome, Record, Write};

const GRACE: Duration = Duration::from_secs(5);
const NODE: &str = "pod-1";

/// The embedded store, with every `deregister` held at a gate: it announces itself on
/// `entered`, waits for a permit on `release`, then announces `done`.
struct Gated {
    inner: EmbeddedStore,
    entered: Notify,
    release: Semaphore,
    done: Notify,
    /// The next removal fails as an unreachable store would.
    fail_next: AtomicBool,
}

impl Gated {
    fn open(dir: &std::path::Path) -> Arc<Gated> {
        Arc::new(Gated {
            inner: EmbeddedStore::open(dir).expect("open"),
            entered: Notify::new(),
            release: Semaphore::new(0),
            done: Notify::new(),
            fail_next: AtomicBool::new(false),
        })
    }

    /// Lets one held removal go through and waits until it has.
    async fn let_one_removal_through(&self) {
        self.release.add_permits(1);
        self.done.notified().await;
    }

    async fn stored(&self) -> Option<v1::Workload> {
        stored(&self.inner).await
    }
}

#[async_trait]
impl Store for Gated {
    async fn deregister(&self, node_id: &str, generation: u64) -> Result<Option<u64>, StoreError> {
        self.entered.notify_one();
        let permit = self.release.acquire().await;
        permit.expect("the gate stays open").forget();
        let result = if self.fail_next.swap(false, Ordering::SeqCst) {
            Err(StoreError::Unavailable("held down by the test".into()))
        } else {
            self.inner.deregister(node_id, generation).await
        };
        self.done.notify_one();
        result
    }

    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<(Outcome, u64)>, StoreError> {
        self.inner.apply(writes).await
    }
    async fn delete(&self, kind: Kind, name: &str) -> Result<Option<u64>, StoreError> {
        self.inner.delete(kind, name).await
    }
    async fn get(&self, kind: Kind, name: &str) -> Result<Option<Record>, StoreError> {
        self.inner.get(kind, name).await
    }
    async fn list(&self, kind: Kind) -> Result<Vec<Record>, StoreError> {
        self.inner.list(kind).await
    }
    async fn register(&self, node_id: &str, workload: Vec<u8>) -> Result<u64, StoreError> {
        self.inner.register(node_id, workload).await
    }
    async fn reregister(
        &self,
        node_id: &str,
        workload: Vec<u8>,
        generation: u64,
    ) -> Result<Option<u64>, StoreError> {
        self.inner.reregister(node_id, workload, generation).await
    }
    async fn contents(&self) -> Result<Contents, StoreError> {
        self.inner.contents().await
    }
    fn revision(&self) -> watch::Receiver<u64> {
        self.inner.revision()
    }
    async fn get_secret(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_secret(key).await
    }
    async fn put_secret(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.inner.put_secret(key, value).await
    }
    async fn create_secret(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        self.inner.create_secret(key, value).await
    }
    async fn list_secrets(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.list_secrets(prefix).await
    }
}

fn workload() -> v1::Workload {
    v1::Workload {
        namespace: "shop".into(),
        service: "web".into(),
        address: "10.0.0.1".into(),
        ports: vec![v1::WorkloadPort {
            name: String::new(),
            port: 8080,
        }],
        ..Default::default()
    }
}

fn report(health: &str) -> v1::WorkloadStatus {
    v1::WorkloadStatus {
        health: health.into(),
        ..Default::default()
    }
}

/// A proxy of `NODE` as the registry holds it (its health is shown by `weftctl status`).
fn proxy() -> Arc<Proxy> {
    let node = v1::Node {
        id: NODE.into(),
        workload: Some(workload()),
        ..Default::default()
    };
    Registry::new().connect(&node)
}

async fn stored(store: &dyn Store) -> Option<v1::Workload> {
    let contents = store.contents().await.expect("contents");
    let registration = contents.registrations.iter().find(|r| r.node_id == NODE)?;
    Some(v1::Workload::decode(registration.workload.as_slice()).expect("decodes"))
}

/// The race of the review: the old stream's expiry has decided to remove the
/// registration when the proxy reconnects and registers the very same workload; the
/// removal must not take the new stream's registration with it.
#[tokio::test(start_paused = true)]
async fn a_proxy_that_reconnects_while_its_expiry_deletes_keeps_its_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Gated::open(dir.path());
    let registrar = Registrar::new(store.clone(), GRACE);
    let old = registrar
        .claim(NODE, Some(workload()))
        .await
        .expect("claim");
    old.release();
    // The grace period is over; the expiry is removing.
    store.entered.notified().await;
    let _new = registrar
        .claim(NODE, Some(workload()))
        .await
        .expect("claim");
    store.let_one_removal_through().await;
    assert_eq!(
        store.stored().await,
        Some(workload()),
        "the connected proxy lost its endpoint"
    );
}

/// The opposite order: the proxy is back before its old stream's end is noticed (a
/// dead connection is only found out by keepalive).
#[tokio::test(start_paused = true)]
async fn an_old_stream_that_ends_after_the_reconnect_does_not_remove_the_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Gated::open(dir.path());
    let registrar = Registrar::new(store.clone(), GRACE);
    let old = registrar
        .claim(NODE, Some(workload()))
        .await
        .expect("claim");
    let _new = registrar
        .claim(NODE, Some(workload()))
        .await
        .expect("claim");
    old.release();
    store.entered.notified().await;
    store.let_one_removal_through().await;
    assert_eq!(store.stored().await, Some(workload()));
}

#[tokio::test(start_paused = true)]
async fn a_registration_is_removed_a_grace_period_after_its_stream_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Gated::open(dir.path());
    let registrar = Registrar::new(store.clone(), GRACE);
    let claim = registrar
        .claim(NODE, Some(workload()))
        .await
        .expect("claim");
    let ended = Instant::now();
    claim.release();
    store.entered.notified().await;
    let waited = ended.elapsed();
    assert!(
        waited >= GRACE && waited < GRACE + Duration::from_millis(10),
        "{waited:?}"
    );
    assert_eq!(
        store.stored().await,
        Some(workload()),
        "kept during the grace"
    );
    store.let_one_removal_through().await;
    assert_eq!(store.stored().await, None);
}

#[tokio::test(start_paused = true)]
async fn a_failed_removal_is_tried_again_a_grace_period_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Gated::open(dir.path());
    let registrar = Registrar::new(store.clone(), GRACE);
    let claim = registrar
        .claim(NODE, Some(workload()))
        .await
        .expect("claim");
    store.fail_next.store(true, Ordering::SeqCst);
    claim.release();
    store.entered.notified().await;
    store.let_one_removal_through().await;
    assert_eq!(store.stored().await, Some(workload()), "the store was down");
    let failed = Instant::now();
    store.entered.notified().await;
    assert!(failed.elapsed() >= GRACE);
    store.let_one_removal_through().await;
    assert_eq!(store.stored().await, None);
}

/// A restart during the grace period: what the previous run left is removed a grace
/// period later, unless its proxy came back to claim it.
#[tokio::test(start_paused = true)]
async fn leftovers_of_a_restart_expire_unless_their_proxy_reconnects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Gated::open(dir.path());
    let registrar = Registrar::new(store.clone(), GRACE);
    let gone = v1::Workload {
        address: "10.0.0.2".into(),
        ..workload()
    };
    store
        .register("pod-2", gone.encode_to_vec())
        .await
        .expect("register");
    store
        .register(NODE, workload().encode_to_vec())
        .await
        .expect("register");
    let leftovers = store.contents().await.expect("contents").registrations;

    registrar.expire_leftovers(&leftovers);
    let _back = registrar
        .claim(NODE, Some(workload()))
        .await
        .expect("claim");
    for _ in &leftovers {
        store.entered.notified().await;
        store.let_one_removal_through().await;
    }
    let contents = store.contents().await.expect("contents");
    let nodes: Vec<_> = contents.registrations.iter().map(|r| &r.node_id).collect();
    assert_eq!(nodes, [NODE]);
}

/// A stream the proxy has left behind (its new one claimed the registration) may still
/// deliver a report; it must neither change nor withdraw the new stream's registration.
#[tokio::test(start_paused = true)]
async fn a_superseded_stream_neither_changes_nor_withdraws_the_registration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Gated::open(dir.path());
    let registrar = Registrar::new(store.clone(), GRACE);
    let proxy = proxy();
    let mut old = registrar
        .claim(NODE, Some(workload()))
        .await
        .expect("claim");
    let mut new = registrar
        .claim(NODE, Some(workload()))
        .await
        .expect("claim");

    old.report(&proxy, &report("unhealthy")).await;
    assert_eq!(store.stored().await, Some(workload()));
    // Were the withdrawal to reach the store, it would not wait at the gate forever.
    store.release.add_permits(1);
    old.report(&proxy, &report("draining")).await;
    assert_eq!(store.stored().await, Some(workload()));
    assert!(old.into_expiry().is_none(), "it holds nothing to expire");

    // The holder's own reports still apply.
    new.report(&proxy, &report("unhealthy")).await;
    let unhealthy = store.stored().await.expect("registered");
    assert_eq!(unhealthy.health, "unhealthy");
    store.release.add_permits(1);
    new.report(&proxy, &report("draining")).await;
    assert_eq!(store.stored().await, None);
}

/// What happens to `NODE`'s registration, in the order it happens.
#[derive(Debug, Clone)]
enum Event {
    /// A new stream claims the registration.
    Connect,
    /// The n-th connected stream reports its workload healthy (true) or not.
    Report(usize, bool),
    Drain(usize),
    /// The n-th connected stream ends; the end of its grace period is pending.
    Disconnect(usize),
    /// The n-th pending grace period ends.
    Expire(usize),
    /// The control plane restarts: its streams and timers are gone, the store stays.
    Restart,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => Just(Event::Connect),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(n, healthy)| Event::Report(n, healthy)),
        1 => any::<usize>().prop_map(Event::Drain),
        3 => any::<usize>().prop_map(Event::Disconnect),
        3 => any::<usize>().prop_map(Event::Expire),
        1 => Just(Event::Restart),
    ]
}

struct Stream {
    id: u64,
    claim: Claim,
}

/// The registration as it must be: which stream claimed it last, with what health.
/// Only that stream's reports and the end of its grace period change it.
#[derive(Debug, Default, PartialEq)]
struct Model {
    holder: Option<(u64, String)>,
}

impl Model {
    fn holds(&self, id: u64) -> bool {
        self.holder
            .as_ref()
            .is_some_and(|(holder, _)| *holder == id)
    }
}

/// Runs the events; after each, the stored registration is exactly the model's.
async fn run(events: Vec<Event>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut registrar = Registrar::new(Arc::new(EmbeddedStore::open(dir.path())?), GRACE);
    let proxy = proxy();
    let mut connected: Vec<Stream> = Vec::new();
    let mut pending: Vec<(u64, Expiry)> = Vec::new();
    let mut model = Model::default();
    let mut next_id = 0;
    for event in events {
        match event {
            Event::Connect => {
                next_id += 1;
                let claim = registrar.claim(NODE, Some(workload())).await?;
                connected.push(Stream { id: next_id, claim });
                model.holder = Some((next_id, String::new()));
            }
            Event::Report(n, healthy) if !connected.is_empty() => {
                let count = connected.len();
                let stream = &mut connected[n % count];
                let health = if healthy { "healthy" } else { "unhealthy" };
                stream.claim.report(&proxy, &report(health)).await;
                if let Some((holder, held)) = &mut model.holder {
                    // "healthy" is what a workload without a verdict is taken to be.
                    if *holder == stream.id && !(held.is_empty() && healthy) {
                        health.clone_into(held);
                    }
                }
            }
            Event::Drain(n) if !connected.is_empty() => {
                let count = connected.len();
                let stream = &mut connected[n % count];
                stream.claim.report(&proxy, &report("draining")).await;
                if model.holds(stream.id) {
                    model.holder = None;
                }
            }
            Event::Disconnect(n) if !connected.is_empty() => {
                let stream = connected.remove(n % connected.len());
                if let Some(expiry) = stream.claim.into_expiry() {
                    pending.push((stream.id, expiry));
                }
            }
            Event::Expire(n) if !pending.is_empty() => {
                let (id, expiry) = pending.remove(n % pending.len());
                expiry.run().await?;
                if model.holds(id) {
                    model.holder = None;
                }
            }
            Event::Restart => {
                // Everything holding the store goes, so that it can be opened again.
                connected.clear();
                pending.clear();
                drop(registrar);
                let store = Arc::new(EmbeddedStore::open(dir.path())?);
                let contents = store.contents().await?;
                registrar = Registrar::new(store, GRACE);
                let holder = model.holder.as_ref().map_or(0, |(id, _)| *id);
                let leftovers = registrar.leftovers(&contents.registrations);
                pending = leftovers.into_iter().map(|e| (holder, e)).collect();
            }
            _ => continue,
        }
        let stored = stored(registrar.store.as_ref()).await;
        let stored = stored.map(|w| w.health);
        prop_assert_eq!(&stored, &model.holder.as_ref().map(|(_, h)| h.clone()));
        // The guarantee itself, which the model implies: the newest stream, while
        // connected and not draining, has its endpoint.
        if let Some(newest) = connected.last().filter(|s| s.id == next_id) {
            if newest.claim.held.is_some() {
                prop_assert!(stored.is_some(), "the connected stream lost its endpoint");
            }
        }
    }
    // And nothing leaks: once every stream has ended and every grace period run out,
    // nothing is registered.
    for stream in connected {
        if let Some(expiry) = stream.claim.into_expiry() {
            pending.push((stream.id, expiry));
        }
    }
    for (_, expiry) in pending {
        expiry.run().await?;
    }
    prop_assert_eq!(stored(registrar.store.as_ref()).await, None);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn no_interleaving_loses_a_connected_proxys_endpoint_or_leaks_one(
        events in prop::collection::vec(event(), 1..40)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(run(events))?;
    }
}
