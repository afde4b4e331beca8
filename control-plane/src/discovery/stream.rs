//! One proxy's stream: push what changed, track nonces, apply ACKs and NACKs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use prost::Message;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};
use weft_proto::resource::Kind;
use weft_proto::v1;
use weft_proto::v1::discovery_request::Request as Req;

use super::diff::{diff, Held, Interest};
use crate::registry::{Proxy, Registry, TypeSync};
use crate::store::Store;
use crate::view::View;

pub struct Context {
    pub view: watch::Receiver<Arc<View>>,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn Store>,
}

/// What this stream knows of one resource type.
#[derive(Default)]
struct TypeState {
    interest: Option<Interest>,
    held: Held,
    /// Resources the proxy rejected, at the version it rejected, with its message.
    rejected: BTreeMap<Arc<str>, (u64, String)>,
    acked_version: u64,
}

/// A push awaiting its ACK or NACK.
struct Pending {
    kind: Kind,
    /// (name, version sent, version held before)
    sent: Vec<(Arc<str>, u64, Option<u64>)>,
    removed: Vec<Arc<str>>,
}

/// Resources are packed into responses of about this many bytes at most.
const MAX_RESPONSE_BYTES: usize = 16 * 1024;

type Tx = mpsc::Sender<Result<v1::DiscoveryResponse, Status>>;

pub async fn run(
    mut context: Context,
    hello: v1::Hello,
    node: v1::Node,
    mut inbound: Streaming<v1::DiscoveryRequest>,
    tx: Tx,
) {
    let proxy = context.registry.connect(&node);
    tracing::info!(node = %node.id, "proxy connected");
    if let Some(workload) = &proxy.workload {
        if let Err(e) = context
            .store
            .register(&node.id, workload.encode_to_vec())
            .await
        {
            let _ = tx
                .send(Err(Status::unavailable(format!(
                    "registering the workload failed: {e}"
                ))))
                .await;
            context.registry.disconnect(&proxy);
            return;
        }
    }

    let mut stream = StreamState::new(&hello);
    loop {
        let view = context.view.borrow_and_update().clone();
        if let Err(e) = stream.push(&view, &tx).await {
            tracing::debug!(node = %node.id, error = %e, "stream closed while pushing");
            break;
        }
        stream.publish_status(&proxy, &view, false);
        tokio::select! {
            changed = context.view.changed() => {
                if changed.is_err() {
                    break;
                }
                stream.publish_status(&proxy, &view, true);
            }
            message = inbound.message() => match message {
                Ok(Some(request)) => {
                    if let Err(status) = stream.handle(request) {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(node = %node.id, error = %e, "stream error");
                    break;
                }
            },
            () = tx.closed() => break,
        }
    }
    tracing::info!(node = %node.id, "proxy disconnected");
    context.registry.disconnect(&proxy);
}

struct StreamState {
    types: BTreeMap<Kind, TypeState>,
    pending: HashMap<String, Pending>,
    next_nonce: u64,
    /// The first push answers every subscribed type, even with nothing to send, so a
    /// proxy learns it is in sync (and may report ready) on an empty or unchanged mesh.
    first_push: bool,
}

impl StreamState {
    fn new(hello: &v1::Hello) -> StreamState {
        let mut types: BTreeMap<Kind, TypeState> = Kind::ALL
            .iter()
            .map(|k| (*k, TypeState::default()))
            .collect();
        let mut known: BTreeMap<Kind, Vec<(String, u64)>> = BTreeMap::new();
        for held in &hello.known {
            if let Some(kind) = Kind::from_type_url(&held.type_url) {
                known
                    .entry(kind)
                    .or_default()
                    .push((held.name.clone(), held.version));
            }
        }
        for (kind, versions) in known {
            if let Some(state) = types.get_mut(&kind) {
                state.held = Held::announced(versions);
            }
        }
        let mut stream = StreamState {
            types,
            pending: HashMap::new(),
            next_nonce: 0,
            first_push: true,
        };
        if hello.subscriptions.is_empty() {
            // A Hello without subscriptions wants everything.
            for state in stream.types.values_mut() {
                state.interest = Some(Interest::All);
            }
        }
        for subscription in &hello.subscriptions {
            stream.subscribe(subscription);
        }
        stream
    }

    /// Sends one response per type whose resources the proxy does not hold yet.
    async fn push(&mut self, view: &View, tx: &Tx) -> Result<(), mpsc::error::SendError<()>> {
        let first_push = std::mem::replace(&mut self.first_push, false);
        for (kind, state) in &mut self.types {
            let Some(interest) = &state.interest else {
                continue;
            };
            let current = view.of(*kind);
            let rejected: BTreeMap<Arc<str>, u64> = state
                .rejected
                .iter()
                .map(|(n, (v, _))| (n.clone(), *v))
                .collect();
            let d = diff(
                &current,
                view.delta(*kind),
                &state.held,
                interest,
                &rejected,
            );
            if d.is_empty() && !first_push {
                state.held.base = current;
                continue;
            }
            let sent: Vec<(Arc<str>, u64, Option<u64>)> = d
                .changed
                .iter()
                .map(|(name, entry)| (name.clone(), entry.version, state.held.version_of(name)))
                .collect();
            // From here on the proxy holds the current view, except where an override
            // still says otherwise (a rejected resource it kept the old version of).
            let sent_names: BTreeSet<&str> = sent.iter().map(|(n, _, _)| n.as_ref()).collect();
            let removed_names: BTreeSet<&str> = d.removed.iter().map(|n| n.as_ref()).collect();
            let overrides = std::mem::take(&mut state.held.overrides);
            state.held.overrides = overrides
                .into_iter()
                .filter(|(name, version)| {
                    !sent_names.contains(name.as_ref())
                        && !removed_names.contains(name.as_ref())
                        && current.get(name).map(|e| e.version) != *version
                        && (version.is_some() || current.contains_key(name))
                })
                .collect();
            state.held.base = current;

            // Large pushes go out in bounded responses: each stream's encoder keeps a
            // buffer as large as the largest message it sent, for the stream's life.
            let mut resources = d.changed.into_iter().zip(sent).peekable();
            let mut removed = Some(d.removed);
            loop {
                let mut chunk = Vec::new();
                let mut bytes = 0;
                while let Some(((_, entry), _)) = resources.peek() {
                    bytes += entry.body.value.len() + 64;
                    if let Some(item) = resources.next() {
                        chunk.push(item);
                    }
                    if bytes >= MAX_RESPONSE_BYTES {
                        break;
                    }
                }
                let last = resources.peek().is_none();
                let removed = if last {
                    removed.take().unwrap_or_default()
                } else {
                    Vec::new()
                };
                self.next_nonce += 1;
                let nonce = self.next_nonce.to_string();
                let response = v1::DiscoveryResponse {
                    nonce: nonce.clone(),
                    type_url: kind.type_url().to_owned(),
                    resources: chunk
                        .iter()
                        .map(|((name, entry), _)| v1::Resource {
                            name: name.to_string(),
                            version: entry.version,
                            body: Some((*entry.body).clone()),
                        })
                        .collect(),
                    removed: removed.iter().map(|n| n.to_string()).collect(),
                    more: !last,
                };
                self.pending.insert(
                    nonce,
                    Pending {
                        kind: *kind,
                        sent: chunk.into_iter().map(|(_, sent)| sent).collect(),
                        removed,
                    },
                );
                tx.send(Ok(response))
                    .await
                    .map_err(|_| mpsc::error::SendError(()))?;
                if last {
                    break;
                }
            }
        }
        Ok(())
    }

    fn handle(&mut self, request: v1::DiscoveryRequest) -> Result<(), Status> {
        match request.request {
            Some(Req::Ack(ack)) => {
                if let Some(pending) = self.pending.remove(&ack.nonce) {
                    self.settle(pending, &[]);
                }
            }
            Some(Req::Nack(nack)) => {
                if let Some(pending) = self.pending.remove(&nack.nonce) {
                    self.settle(pending, &nack.errors);
                }
            }
            Some(Req::Subscription(subscription)) => self.subscribe(&subscription),
            Some(Req::Hello(_)) => {
                return Err(Status::invalid_argument(
                    "Hello may only be the first message",
                ))
            }
            None => return Err(Status::invalid_argument("empty request")),
        }
        Ok(())
    }

    /// Applies the answer to a push: everything sent is held except what was rejected,
    /// which the proxy kept at its previous version.
    fn settle(&mut self, pending: Pending, errors: &[v1::ResourceError]) {
        let Some(state) = self.types.get_mut(&pending.kind) else {
            return;
        };
        let rejected: HashMap<&str, &v1::ResourceError> =
            errors.iter().map(|e| (e.name.as_str(), e)).collect();
        for (name, version, previous) in &pending.sent {
            match rejected.get(name.as_ref()) {
                Some(error) => {
                    state.held.overrides.insert(name.clone(), *previous);
                    state
                        .rejected
                        .insert(name.clone(), (*version, error.message.clone()));
                }
                None => {
                    state.acked_version = state.acked_version.max(*version);
                    state.rejected.remove(name);
                }
            }
        }
        for name in &pending.removed {
            state.rejected.remove(name);
        }
    }

    fn subscribe(&mut self, subscription: &v1::Subscription) {
        let Some(kind) = Kind::from_type_url(&subscription.type_url) else {
            tracing::debug!(type_url = %subscription.type_url, "subscription to an unknown type ignored");
            return;
        };
        let Some(state) = self.types.get_mut(&kind) else {
            return;
        };
        for name in &subscription.subscribe {
            if name == "*" {
                state.interest = Some(Interest::All);
                continue;
            }
            match &mut state.interest {
                Some(Interest::All) => {}
                Some(Interest::Names(names)) => {
                    names.insert(name.clone());
                }
                None => state.interest = Some(Interest::Names(BTreeSet::from([name.clone()]))),
            }
            // The base may list it, but the proxy did not want it until now.
            if !state.held.overrides.contains_key(name.as_str()) {
                state.held.overrides.insert(Arc::from(name.as_str()), None);
            }
        }
        for name in &subscription.unsubscribe {
            if name == "*" {
                state.interest = None;
            } else if let Some(Interest::Names(names)) = &mut state.interest {
                names.remove(name);
            }
        }
    }

    fn publish_status(&self, proxy: &Proxy, view: &View, behind: bool) {
        let mut pending: BTreeMap<Kind, u32> = BTreeMap::new();
        for p in self.pending.values() {
            *pending.entry(p.kind).or_default() += 1;
        }
        proxy.update(|sync| {
            sync.behind = behind;
            for (kind, state) in &self.types {
                if state.interest.is_none() {
                    continue;
                }
                sync.types.insert(
                    *kind,
                    TypeSync {
                        acked_version: state.acked_version,
                        latest_version: view.latest_version(*kind),
                        pending_pushes: pending.get(kind).copied().unwrap_or(0),
                        rejected: state
                            .rejected
                            .iter()
                            .map(|(n, (v, m))| (n.to_string(), (*v, m.clone())))
                            .collect(),
                    },
                );
            }
        });
    }
}
