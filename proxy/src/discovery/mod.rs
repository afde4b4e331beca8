//! The control-plane client: one discovery stream, kept up for the proxy's lifetime.
//!
//! Each attempt resolves the control plane's name afresh (hickory, honouring the
//! record's TTL through its cache), so a proxy follows whichever replica is up, then
//! says Hello with the versions it holds, and applies every push into a new snapshot.
//! Losing the stream changes nothing on the data path: the last good snapshot keeps
//! serving while the client reconnects with jittered backoff (static stability).

mod backoff;
mod resources;
pub mod state_dir;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weft_proto::resource::Kind;
use weft_proto::v1;
use weft_proto::v1::discovery_client::DiscoveryClient;
use weft_proto::v1::discovery_request::Request as Req;

pub use backoff::Backoff;
pub use resources::Resources;
pub use state_dir::restore;

use crate::config::ControlPlaneAddr;
use crate::drain::Watch;
use crate::state::{ConfigSource, ConnectionState, Rejected, Shared};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// How long an ACK waits for the data path to apply its push.
const APPLY_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("resolving {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("connecting to {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("stream: {0}")]
    Stream(#[from] tonic::Status),
    #[error("the control plane closed the stream")]
    Closed,
    /// Not a failure: the workload's identity changed after the Hello, and the Hello is
    /// the only place a workload is announced, so the stream is reopened at once.
    #[error("announcing a new identity")]
    Reannounce,
}

/// The resolver for the control plane's name; `None` when the system has no resolver
/// configuration (then only IP addresses work).
pub(crate) fn resolver() -> Option<TokioResolver> {
    match TokioResolver::builder_tokio().and_then(|b| b.build()) {
        Ok(resolver) => Some(resolver),
        Err(e) => {
            tracing::warn!(error = %e, "no DNS resolver configuration; only IP addresses will work");
            None
        }
    }
}

/// Resolves the control plane afresh and connects to the first address that answers,
/// trying the addresses in a random order so that proxies spread over the replicas.
/// Discovery and the certificate manager both dial through here, so they follow the
/// same replica choice and DNS behaviour.
pub(crate) async fn dial(
    targets: &[ControlPlaneAddr],
    resolver: Option<&TokioResolver>,
) -> Result<(tonic::transport::Channel, SocketAddr), DiscoveryError> {
    let mut addresses = Vec::new();
    let mut unresolved = None;
    for target in targets {
        match resolve(resolver, &target.host, target.port).await {
            Ok(resolved) => addresses.extend(resolved),
            Err(e) => unresolved = Some(e),
        }
    }
    if addresses.is_empty() {
        return Err(unresolved.unwrap_or(DiscoveryError::Resolve {
            host: String::new(),
            reason: "no control plane address".into(),
        }));
    }
    use rand::seq::SliceRandom;
    addresses.shuffle(&mut rand::rng());
    connect(&addresses).await
}

pub async fn run(shared: Arc<Shared>, mut drain: Watch, mut resources: Resources) {
    let resolver = resolver();
    let mut backoff = Backoff::new(FIRST_RETRY, shared.config.reconnect_max);
    loop {
        let mut progressed = false;
        let result = tokio::select! {
            result = session(&shared, resolver.as_ref(), &mut resources, &mut progressed) => result,
            () = drain.signaled() => return,
        };
        let error = match result {
            Ok(()) => DiscoveryError::Closed,
            Err(DiscoveryError::Reannounce) => {
                // The registration survives: the same node id reconnects within the
                // grace period, and only the difference is pushed again.
                tracing::info!("reopening the discovery stream to announce the identity");
                continue;
            }
            Err(e) => e,
        };
        tracing::warn!(error = %error, "control plane unreachable; serving the last good config");
        metrics::gauge!("weft_control_plane_connected").set(0.0);
        metrics::counter!("weft_control_plane_reconnects_total").increment(1);
        shared.update_connection(|c| {
            c.state = ConnectionState::Disconnected;
            c.last_error = Some(error.to_string());
            c.reconnects += 1;
        });
        if progressed {
            backoff.reset();
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = drain.signaled() => return,
        }
    }
}

/// One connection and stream; returns when it ends. `progressed` is set once a push
/// arrived, which resets the backoff.
async fn session(
    shared: &Shared,
    resolver: Option<&TokioResolver>,
    resources: &mut Resources,
    progressed: &mut bool,
) -> Result<(), DiscoveryError> {
    let (channel, address) = dial(&shared.config.control_plane, resolver).await?;
    let mut client = DiscoveryClient::new(channel);

    let (tx, rx) = mpsc::channel(16);
    // The first certificate usually arrives after the first Hello (the trust domain
    // comes over this stream), so a change of identity reopens the stream.
    let mut identity = shared.identity.subscribe();
    let mut health = shared.workload_health.subscribe();
    let node = node(
        shared,
        announced_identity(&mut identity).as_deref(),
        health.borrow_and_update().as_str(),
    );
    let announced = node.workload.as_ref().map(|w| w.identity.clone());
    let hello = v1::DiscoveryRequest {
        request: Some(Req::Hello(v1::Hello {
            node: Some(node),
            known: resources.known(),
            subscriptions: Vec::new(),
        })),
    };
    // The channel has room: this cannot block or fail before the stream starts.
    let _ = tx.try_send(hello);
    let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    tracing::info!(%address, "connected to the control plane");
    metrics::gauge!("weft_control_plane_connected").set(1.0);
    shared.update_connection(|c| {
        c.state = ConnectionState::Connected;
        c.peer = Some(address.to_string());
        c.last_error = None;
    });

    // Types for which a complete push has arrived on this stream.
    let mut complete: BTreeSet<Kind> = BTreeSet::new();
    loop {
        let response = tokio::select! {
            response = inbound.message() => match response? {
                Some(response) => response,
                None => break,
            },
            changed = identity.changed(), if announced.is_some() => {
                if changed.is_err() {
                    // The identity state outlives this task; nothing to announce.
                    continue;
                }
                let now = announced_identity(&mut identity).unwrap_or_default();
                if announced.as_ref().is_some_and(|a| *a != now) {
                    return Err(DiscoveryError::Reannounce);
                }
                continue;
            }
            changed = health.changed(), if announced.is_some() => {
                if changed.is_err() {
                    continue;
                }
                let status = {
                    let now = health.borrow_and_update();
                    v1::WorkloadStatus {
                        health: now.as_str().to_owned(),
                        reason: now.reason().to_owned(),
                    }
                };
                tracing::info!(health = %status.health, reason = %status.reason, "reporting the workload's state");
                let request = v1::DiscoveryRequest {
                    request: Some(Req::Status(status)),
                };
                if tx.send(request).await.is_err() {
                    break;
                }
                continue;
            }
        };
        *progressed = true;
        let kind = Kind::from_type_url(&response.type_url);
        let errors = resources.apply(&response);
        let mut published = None;
        if !response.more {
            // The data path sees whole pushes only.
            let snapshot = Arc::new(resources.snapshot());
            shared.snapshot.send_replace(snapshot.clone());
            published = Some(snapshot);
            if kind == Some(Kind::TrustBundle) {
                if let Some(view) = resources.trust_bundle() {
                    shared
                        .identity
                        .set_trust_bundle(Arc::new(view.bundle.clone()));
                }
            }
            complete.extend(kind);
            if Kind::ALL.iter().all(|k| complete.contains(k)) {
                shared.configured.store(true, Ordering::Release);
                if shared.source() != ConfigSource::ControlPlane {
                    if shared.is_stale() {
                        tracing::info!(
                            "in sync with the control plane again; the config is no longer stale"
                        );
                    }
                    shared.set_source(ConfigSource::ControlPlane);
                }
            }
            save(shared, resources).await;
        }
        record(shared, resources, kind, &response, &errors);
        // An ACK says the push is in force: requests that arrive after the control
        // plane sees it take the new routes and endpoints. The data path rebuilds
        // its tables on its own runtime, so wait for that (bounded: a data path that
        // is not running must not stall the stream).
        if let Some(snapshot) = published {
            if !shared.wait_applied(&snapshot, APPLY_WAIT).await {
                tracing::warn!(
                    "the data path did not apply a push in time; acknowledging it anyway"
                );
            }
        }
        let answer = if errors.is_empty() {
            Req::Ack(v1::Ack {
                nonce: response.nonce,
            })
        } else {
            Req::Nack(v1::Nack {
                nonce: response.nonce,
                errors,
            })
        };
        if tx
            .send(v1::DiscoveryRequest {
                request: Some(answer),
            })
            .await
            .is_err()
        {
            break;
        }
    }
    Ok(())
}

/// Writes the last good config to the state directory, if there is one. A failure is
/// logged and counted: the data path does not depend on it.
async fn save(shared: &Shared, resources: &Resources) {
    let Some(dir) = shared.config.state_dir.clone() else {
        return;
    };
    let resources = resources.clone();
    let saved = tokio::task::spawn_blocking(move || state_dir::save(&dir, &resources)).await;
    let error = match saved {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    tracing::warn!(%error, "saving the config to the state directory failed");
    metrics::counter!("weft_config_state_errors_total", "operation" => "save").increment(1);
}

/// The SPIFFE ID to announce: the current certificate's, marked seen.
fn announced_identity(
    identity: &mut tokio::sync::watch::Receiver<Option<Arc<crate::identity::Identity>>>,
) -> Option<String> {
    identity
        .borrow_and_update()
        .as_ref()
        .map(|i| i.spiffe_id.to_string())
}

fn node(shared: &Shared, identity: Option<&str>, health: &str) -> v1::Node {
    let config = &shared.config;
    let workload = config.workload.as_ref().map(|w| v1::Workload {
        namespace: config.namespace.clone(),
        service: w.service.clone(),
        address: w.address.to_string(),
        ports: w
            .ports
            .iter()
            .map(|p| v1::WorkloadPort {
                name: p.name.clone(),
                port: u32::from(p.port),
            })
            .collect(),
        locality: Some(v1::Locality {
            region: w.region.clone(),
            zone: w.zone.clone(),
        }),
        labels: w
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        weight: w.weight,
        identity: identity.unwrap_or_default().to_owned(),
        health: health.to_owned(),
    });
    v1::Node {
        id: config.node_id.clone(),
        workload,
        build: env!("CARGO_PKG_VERSION").to_owned(),
        admin_address: config.admin_advertise.clone(),
    }
}

/// Counts the push and updates what `/config_dump` shows of rejected resources.
fn record(
    shared: &Shared,
    resources: &Resources,
    kind: Option<Kind>,
    response: &v1::DiscoveryResponse,
    errors: &[v1::ResourceError],
) {
    let type_label = kind.map(|k| k.as_str()).unwrap_or("unknown");
    let result = if errors.is_empty() { "ack" } else { "nack" };
    metrics::counter!("weft_config_updates_total", "type" => type_label, "result" => result)
        .increment(1);
    // What /config_dump lists as rejected, as a level an alert can hold on to: a
    // proxy refusing a resource keeps refusing it until a push replaces it.
    metrics::gauge!("weft_config_rejected_resources", "type" => type_label)
        .set(errors.len() as f64);
    // Shows that a reconnect resumes: only the difference is sent again.
    metrics::counter!("weft_config_resources_received_total", "type" => type_label)
        .increment(response.resources.len() as u64);
    if let Some(kind) = kind {
        metrics::gauge!("weft_config_resources", "type" => type_label)
            .set(resources.count(kind) as f64);
        metrics::gauge!("weft_config_version", "type" => type_label)
            .set(resources.max_version(kind) as f64);
    }
    shared.update_connection(|c| {
        // Rejections of this type are replaced by this push's verdict.
        c.rejected.retain(|r| r.type_url != response.type_url);
        c.rejected.extend(errors.iter().map(|e| Rejected {
            type_url: response.type_url.clone(),
            name: e.name.clone(),
            version: e.version,
            message: e.message.clone(),
        }));
    });
}

async fn resolve(
    resolver: Option<&TokioResolver>,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, DiscoveryError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let failed = |reason: String| DiscoveryError::Resolve {
        host: host.to_owned(),
        reason,
    };
    let resolver = resolver.ok_or_else(|| failed("no resolver configuration".into()))?;
    let lookup = resolver
        .lookup_ip(host)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let addresses: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
    if addresses.is_empty() {
        return Err(failed("no addresses".into()));
    }
    Ok(addresses)
}

/// Tries each address in turn; the first that answers wins.
async fn connect(
    addresses: &[SocketAddr],
) -> Result<(tonic::transport::Channel, SocketAddr), DiscoveryError> {
    let mut last = String::from("no address to try");
    for address in addresses {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| DiscoveryError::Connect {
                address: address.to_string(),
                reason: e.to_string(),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(15))
            .keep_alive_timeout(Duration::from_secs(5));
        match endpoint.connect().await {
            Ok(channel) => return Ok((channel, *address)),
            Err(e) => last = format!("{e}: {}", source_chain(&e)),
        }
    }
    Err(DiscoveryError::Connect {
        address: addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        reason: last,
    })
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut chain = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        chain.push(s.to_string());
        source = s.source();
    }
    chain.join(": ")
}
