//! One proxy's stream: push what changed, track nonces, apply ACKs and NACKs.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};
use weft_proto::resource::Kind;
use weft_proto::v1;
use weft_proto::v1::discovery_request::Request as Req;

use super::diff::{owes, quick_diff, sweep, Held, Interest};
use super::registration::Registrar;
use crate::registry::{Proxy, Registry, TypeSync};
use crate::view::{Entry, TypeView, View};

pub struct Context {
    pub view: watch::Receiver<Arc<View>>,
    pub registry: Arc<Registry>,
    pub registrar: Registrar,
}

/// What this stream knows of one resource type.
#[derive(Default)]
struct TypeState {
    interest: Option<Interest>,
    held: Held,
    /// Resources the proxy rejected, at the version it rejected, with its message.
    rejected: BTreeMap<Arc<str>, (u64, String)>,
    acked_version: u64,
    /// What the proxy wants changed since the last plan (a new stream, a subscription):
    /// otherwise a type needs planning only when the view of it changed.
    dirty: bool,
}

/// A push awaiting its ACK or NACK.
struct Pending {
    kind: Kind,
    /// (name, version sent, version held before)
    sent: Vec<(Arc<str>, u64, Option<u64>)>,
    removed: Vec<Arc<str>>,
}

/// Resources are packed into responses of about this many bytes at most. Each stream's
/// gRPC encoder keeps a buffer as large as the most it ever encoded at once, for the
/// stream's life; responses this small (times [`MAX_IN_FLIGHT`]) keep it at its
/// initial 8 KiB.
const MAX_RESPONSE_BYTES: usize = 4 * 1024;

/// Responses sent and not yet ACKed or NACKed, at most. The rest of a push waits as a
/// plan, not as encoded bytes: a thousand proxies taking the full mesh at once used to
/// queue it in HTTP/2 send buffers (up to ~400 KB a stream), and the allocator kept
/// that peak for good. The cost is one round trip per two responses, which on a
/// loopback or LAN is far below the time to decode them.
const MAX_IN_FLIGHT: usize = 2;

/// Responses owed to the proxy for one type, built one at a time as the window opens.
struct Owed {
    kind: Kind,
    source: Source,
    /// Answer even if nothing turns out to be owed (the first push of a stream).
    answer_even_if_empty: bool,
    /// A response of this push went out with `more` set, so the push must be closed
    /// by a response without it, even an empty one.
    announced_more: bool,
}

enum Source {
    /// A short list known up front: what changed between two views.
    Listed {
        changed: std::vec::IntoIter<(Arc<str>, Entry, Option<u64>)>,
        removed: Vec<Arc<str>>,
    },
    /// A walk of the whole view against what the proxy held, a response at a time.
    Sweep(Box<Sweep>),
}

struct Sweep {
    view: Arc<TypeView>,
    /// What the proxy held when the walk was planned.
    held: Held,
    interest: Interest,
    rejected: BTreeMap<Arc<str>, u64>,
    /// The last name walked past; None before the first step.
    after: Option<Arc<str>>,
}

/// One response's worth of an [`Owed`]: (name, entry, version held before), removals,
/// and whether the owed work is complete.
type Chunk = (Vec<(Arc<str>, Entry, Option<u64>)>, Vec<Arc<str>>, bool);

impl Owed {
    fn next_chunk(&mut self) -> Chunk {
        match &mut self.source {
            Source::Listed { changed, removed } => {
                let mut chunk = Vec::new();
                let mut bytes = 0;
                for item in changed.by_ref() {
                    bytes += item.1.body.value.len() + item.0.len() + 32;
                    chunk.push(item);
                    if bytes >= MAX_RESPONSE_BYTES {
                        break;
                    }
                }
                let done = changed.len() == 0;
                // Removals ride with the last response.
                let removed = if done {
                    std::mem::take(removed)
                } else {
                    Vec::new()
                };
                (chunk, removed, done)
            }
            Source::Sweep(walk) => {
                let (diff, next) = sweep(
                    &walk.view,
                    &walk.held,
                    &walk.interest,
                    &walk.rejected,
                    walk.after.as_deref(),
                    MAX_RESPONSE_BYTES,
                );
                let chunk = diff
                    .changed
                    .into_iter()
                    .map(|(name, entry)| {
                        let before = walk.held.version_of(&name);
                        (name, entry, before)
                    })
                    .collect();
                let done = next.is_none();
                walk.after = next;
                (chunk, diff.removed, done)
            }
        }
    }
}

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
    let claimed = context
        .registrar
        .claim(&node.id, proxy.workload.clone())
        .await;
    let mut registration = match claimed {
        Ok(registration) => registration,
        Err(e) => {
            let _ = tx
                .send(Err(Status::unavailable(format!(
                    "registering the workload failed: {e}"
                ))))
                .await;
            context.registry.disconnect(&proxy);
            return;
        }
    };

    let mut stream = StreamState::new(&hello);
    'serve: loop {
        let view = context.view.borrow_and_update().clone();
        stream.plan(&view);
        while let Some(response) = stream.next_response() {
            if tx.send(Ok(response)).await.is_err() {
                tracing::debug!(node = %node.id, "stream closed while pushing");
                break 'serve;
            }
        }
        stream.publish_status(&proxy, &view, !stream.owed.is_empty());
        tokio::select! {
            changed = context.view.changed() => {
                if changed.is_err() {
                    break;
                }
                stream.publish_status(&proxy, &view, true);
            }
            message = inbound.message() => match message {
                Ok(Some(v1::DiscoveryRequest { request: Some(Req::Status(status)) })) => {
                    registration.report(&proxy, &status).await;
                }
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
    registration.release();
}

struct StreamState {
    types: BTreeMap<Kind, TypeState>,
    pending: HashMap<String, Pending>,
    /// Planned and not yet sent, in order: a type's later plan goes after its earlier.
    owed: VecDeque<Owed>,
    next_nonce: u64,
    /// The first push answers every subscribed type, even with nothing to send, so a
    /// proxy learns it is in sync (and may report ready) on an empty or unchanged mesh.
    first_push: bool,
}

impl StreamState {
    fn new(hello: &v1::Hello) -> StreamState {
        let mut types: BTreeMap<Kind, TypeState> = Kind::ALL
            .iter()
            .map(|k| {
                let state = TypeState {
                    dirty: true,
                    ..TypeState::default()
                };
                (*k, state)
            })
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
                // What a reconnecting proxy holds it acknowledged on its earlier stream;
                // resources it holds at the current version are not sent again, so
                // nothing else would ever count them as acknowledged.
                state.acked_version = versions.iter().map(|(_, v)| *v).max().unwrap_or(0);
                state.held = Held::announced(versions);
            }
        }
        let mut stream = StreamState {
            types,
            pending: HashMap::new(),
            owed: VecDeque::new(),
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

    /// Plans what each type whose view changed owes the proxy. From here on the proxy
    /// is taken to hold the current view (once what is owed is delivered), except where
    /// an override still says otherwise (a rejected resource it kept the old version of).
    fn plan(&mut self, view: &View) {
        let first_push = std::mem::replace(&mut self.first_push, false);
        for (kind, state) in &mut self.types {
            let Some(interest) = &state.interest else {
                continue;
            };
            let current = view.of(*kind);
            if !state.dirty && Arc::ptr_eq(&current, &state.held.base) {
                continue;
            }
            state.dirty = false;
            let rejected: BTreeMap<Arc<str>, u64> = state
                .rejected
                .iter()
                .map(|(n, (v, _))| (n.clone(), *v))
                .collect();
            let source = match quick_diff(
                &current,
                view.delta(*kind),
                &state.held,
                interest,
                &rejected,
            ) {
                Some(d) if d.is_empty() && !first_push => {
                    state.held.base = current;
                    continue;
                }
                Some(d) => {
                    let changed: Vec<_> = d
                        .changed
                        .into_iter()
                        .map(|(name, entry)| {
                            let before = state.held.version_of(&name);
                            (name, entry, before)
                        })
                        .collect();
                    Source::Listed {
                        changed: changed.into_iter(),
                        removed: d.removed,
                    }
                }
                None => Source::Sweep(Box::new(Sweep {
                    view: current.clone(),
                    held: state.held.clone(),
                    interest: interest.clone(),
                    rejected: rejected.clone(),
                    after: None,
                })),
            };
            // An override outlives the plan only where the proxy keeps holding something
            // other than the current view without being sent anything: the per-name rule
            // of the diff, so no list of everything owed is needed.
            let overrides = std::mem::take(&mut state.held.overrides);
            let overrides = overrides
                .into_iter()
                .filter(|(name, version)| {
                    !owes(&current, name, *version, interest, &rejected)
                        && current.get(name).map(|e| e.version) != *version
                        && (version.is_some() || current.contains_key(name))
                })
                .collect();
            state.held = Held {
                base: current,
                overrides,
            };
            self.owed.push_back(Owed {
                kind: *kind,
                source,
                answer_even_if_empty: first_push,
                announced_more: false,
            });
        }
    }

    /// The next response, if something is owed and the window of unanswered responses
    /// has room.
    fn next_response(&mut self) -> Option<v1::DiscoveryResponse> {
        while self.pending.len() < MAX_IN_FLIGHT {
            let owed = self.owed.front_mut()?;
            let kind = owed.kind;
            let answer_even_if_empty = std::mem::replace(&mut owed.answer_even_if_empty, false);
            let (chunk, removed, done) = owed.next_chunk();
            let must_close = done && owed.announced_more;
            let send =
                !(chunk.is_empty() && removed.is_empty()) || answer_even_if_empty || must_close;
            if send && !done {
                owed.announced_more = true;
            }
            if done {
                self.owed.pop_front();
            }
            if !send {
                continue;
            }
            self.next_nonce += 1;
            let nonce = self.next_nonce.to_string();
            let response = v1::DiscoveryResponse {
                nonce: nonce.clone(),
                type_url: kind.type_url().to_owned(),
                resources: chunk
                    .iter()
                    .map(|(name, entry, _)| v1::Resource {
                        name: name.to_string(),
                        version: entry.version,
                        body: Some((*entry.body).clone()),
                    })
                    .collect(),
                removed: removed.iter().map(|n| n.to_string()).collect(),
                more: !done,
            };
            self.pending.insert(
                nonce,
                Pending {
                    kind,
                    sent: chunk
                        .into_iter()
                        .map(|(name, entry, before)| (name, entry.version, before))
                        .collect(),
                    removed,
                },
            );
            return Some(response);
        }
        None
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
            // Handled by the stream's loop, which owns the registration.
            Some(Req::Status(_)) => {}
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
        state.dirty = true;
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
