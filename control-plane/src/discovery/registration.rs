//! Self-registration: a proxy whose Hello names its workload is an endpoint of that
//! service while its discovery stream is up, and for a grace period after the stream
//! ends, so that a proxy which reconnects (after a blip, to another replica, to a
//! restarted control plane) keeps its endpoint throughout. Its later reports on the
//! workload (health, draining) change or withdraw the registration.
//!
//! Each stream claims the node's registration, which gives the stored registration a
//! new generation. Everything else that writes or removes it (the stream's reports, the
//! expiry when the grace period ends, the expiry of leftovers after a restart) is
//! conditional on the generation it is about still being stored. So whatever order a
//! reconnect and the end of an older stream (or of its grace period) happen in, nothing
//! older overwrites or removes a newer claim. The store is the only arbiter: a map of
//! the newest stream per node in memory, as there was, is blind to other replicas and
//! to restarts, and left a gap between deciding to remove and removing.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use weft_proto::v1;

use crate::registry::Proxy;
use crate::store::{Registration, Store, StoreError};

const HEALTH_DRAINING: &str = "draining";

/// Where registrations are kept and how long they outlive their stream.
#[derive(Clone)]
pub struct Registrar {
    store: Arc<dyn Store>,
    grace: Duration,
}

/// A stream's hold on its node's registration.
pub struct Claim {
    registrar: Registrar,
    node_id: String,
    /// The workload as last written, and the generation that write got. `None` when
    /// there is nothing (left) to hold: no workload, a draining one, or a newer claim
    /// took over.
    held: Option<(v1::Workload, u64)>,
}

/// The removal of a registration once its grace period is over, unless it has been
/// claimed again by then.
struct Expiry {
    store: Arc<dyn Store>,
    node_id: String,
    generation: u64,
}

impl Registrar {
    pub fn new(store: Arc<dyn Store>, grace: Duration) -> Registrar {
        Registrar { store, grace }
    }

    /// At start-up: registrations left by the previous run are kept for the grace
    /// period, so proxies that reconnect in time never lose their endpoint.
    pub fn expire_leftovers(&self, leftovers: &[Registration]) {
        for expiry in self.leftovers(leftovers) {
            expiry.after(self.grace);
        }
    }

    fn leftovers(&self, leftovers: &[Registration]) -> Vec<Expiry> {
        let expiry = |leftover: &Registration| self.expiry(&leftover.node_id, leftover.generation);
        leftovers.iter().map(expiry).collect()
    }

    /// Registers the workload a stream's Hello announced (nothing without one, or when
    /// it is draining), taking over from any earlier stream of the node.
    pub async fn claim(
        &self,
        node_id: &str,
        workload: Option<v1::Workload>,
    ) -> Result<Claim, StoreError> {
        let workload = workload.filter(|w| w.health != HEALTH_DRAINING);
        let held = match workload {
            Some(workload) => {
                let generation = self
                    .store
                    .register(node_id, workload.encode_to_vec())
                    .await?;
                Some((workload, generation))
            }
            None => None,
        };
        Ok(Claim {
            registrar: self.clone(),
            node_id: node_id.to_owned(),
            held,
        })
    }

    fn expiry(&self, node_id: &str, generation: u64) -> Expiry {
        Expiry {
            store: self.store.clone(),
            node_id: node_id.to_owned(),
            generation,
        }
    }
}

impl Claim {
    /// Applies a proxy's report on its workload: a draining workload is deregistered at
    /// once (no grace period: its proxy still serves, and wants peers gone before it
    /// stops), a health verdict re-registers it with that health so that every view
    /// marks its endpoints.
    pub async fn report(&mut self, proxy: &Proxy, status: &v1::WorkloadStatus) {
        let node_id = self.node_id.as_str();
        let Some((current, generation)) = self.held.as_mut() else {
            return;
        };
        let health = status.health.as_str();
        if matches!(health, HEALTH_DRAINING | "healthy" | "unhealthy") {
            proxy.set_health(health);
        }
        let store = &self.registrar.store;
        match health {
            HEALTH_DRAINING => match store.deregister(node_id, *generation).await {
                Ok(removed) => {
                    self.held = None;
                    if removed.is_some() {
                        tracing::info!(node = %node_id, "workload draining; endpoint withdrawn");
                    }
                }
                Err(e) => {
                    tracing::error!(node = %node_id, error = %e, "withdrawing a draining workload failed")
                }
            },
            "healthy" | "unhealthy" => {
                if current.health == health || (current.health.is_empty() && health == "healthy") {
                    return;
                }
                let mut changed = current.clone();
                health.clone_into(&mut changed.health);
                let written = store
                    .reregister(node_id, changed.encode_to_vec(), *generation)
                    .await;
                match written {
                    Ok(Some(next)) => {
                        tracing::info!(node = %node_id, health, reason = %status.reason, "workload health changed");
                        *current = changed;
                        *generation = next;
                    }
                    Ok(None) => {
                        tracing::info!(node = %node_id, "a newer stream holds the registration; report ignored");
                        self.held = None;
                    }
                    Err(e) => {
                        tracing::error!(node = %node_id, error = %e, "recording the workload's health failed")
                    }
                }
            }
            other => {
                tracing::warn!(node = %node_id, health = other, "ignoring an unknown workload state");
            }
        }
    }

    /// The stream ended: the registration is removed after the grace period unless
    /// the node has claimed it again by then.
    pub fn release(self) {
        let grace = self.registrar.grace;
        if let Some(expiry) = self.into_expiry() {
            expiry.after(grace);
        }
    }

    fn into_expiry(self) -> Option<Expiry> {
        let (_, generation) = self.held?;
        Some(self.registrar.expiry(&self.node_id, generation))
    }
}

impl Expiry {
    fn after(self, grace: Duration) {
        tokio::spawn(async move {
            // A failed removal is tried again: being conditional, a late one can only
            // remove what nobody has claimed since.
            loop {
                tokio::time::sleep(grace).await;
                if self.run().await.is_ok() {
                    return;
                }
            }
        });
    }

    /// Removes the registration if it is still the generation this expiry is about.
    async fn run(&self) -> Result<(), StoreError> {
        let node_id = &self.node_id;
        match self.store.deregister(node_id, self.generation).await {
            Ok(Some(_)) => {
                tracing::info!(node = %node_id, "workload deregistered after grace period");
                Ok(())
            }
            Ok(None) => {
                tracing::debug!(node = %node_id, "registration claimed again; kept");
                Ok(())
            }
            Err(e) => {
                tracing::error!(node = %node_id, error = %e, "deregistration failed; will retry");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests;
