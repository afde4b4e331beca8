//! Authorization on the inbound side: which callers may reach the local workload.
//!
//! Sits between the mTLS handshake (which yields the caller's SPIFFE ID) and the
//! local app. Each snapshot's policies are resolved once into [`InboundPolicies`]:
//! for every local port, the policies of each service that owns it ([`crate::local`]),
//! with their counters; a request or TCP connection then only looks its port up and
//! walks that short list. The decision rules themselves are the model's
//! ([`weft_proto::model::decide`]), shared with the control plane.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use weft_proto::model::{decide, AuthorizationPolicy, Decision, ResourceName, SpiffeId};

use crate::local::{Local, LocalPort, Owner};
use crate::metrics::AuthzMetrics;
use crate::snapshot::{PolicyView, Snapshot};

/// Who is calling, and which local port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// From the client certificate; `None` for a plaintext (PERMISSIVE) client.
    pub identity: Option<SpiffeId>,
    /// The workload port the client dialled (as announced in the endpoints).
    pub port: u16,
}

/// A denial: the policy that decided it, for the log (the client is not told which).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub policy: ResourceName,
}

/// The policies protecting the local workload in one snapshot, by port.
#[derive(Debug, Default)]
pub struct InboundPolicies {
    by_port: BTreeMap<u16, Vec<Guard>>,
    /// For the ports [`Local`] does not list.
    other: Vec<Guard>,
}

/// The policies of one service that owns a port, in name order; a service without
/// any has no guard (it is open).
#[derive(Debug)]
struct Guard {
    policies: Vec<Protecting>,
}

#[derive(Debug)]
struct Protecting {
    view: Arc<PolicyView>,
    metrics: Arc<AuthzMetrics>,
}

impl AsRef<AuthorizationPolicy> for Protecting {
    fn as_ref(&self) -> &AuthorizationPolicy {
        &self.view.policy
    }
}

impl InboundPolicies {
    /// Resolves, for each local port, the policies of every service owning it: a
    /// policy without a port protects each port its service owns here, one with a
    /// port the workload ports serving that service port. `metrics` carries the
    /// counters across snapshots, so each policy's series is registered once.
    pub fn build(
        snapshot: &Snapshot,
        local: &Local,
        metrics: &mut HashMap<ResourceName, Arc<AuthzMetrics>>,
    ) -> InboundPolicies {
        let mut guards = |port: &LocalPort| -> Vec<Guard> {
            port.owners
                .iter()
                .map(|owner| Guard {
                    policies: protecting(snapshot, owner, metrics),
                })
                .filter(|guard| !guard.policies.is_empty())
                .collect()
        };
        InboundPolicies {
            by_port: local
                .ports
                .iter()
                .map(|(port, served)| (*port, guards(served)))
                .collect(),
            other: guards(&local.other),
        }
    }

    /// Decides for one caller: every service owning the dialled port must let it
    /// through (a port two services share is as closed as the stricter), and each
    /// service's deciding policy counts its verdict.
    pub fn check(&self, caller: &Caller) -> Result<(), Denied> {
        let guards = self.by_port.get(&caller.port).unwrap_or(&self.other);
        let mut verdict = Ok(());
        for guard in guards {
            match decide(&guard.policies, caller.identity.as_ref()) {
                Decision::Open => {}
                Decision::Allowed(policy) => policy.metrics.allowed.increment(1),
                Decision::Denied(policy) => {
                    policy.metrics.denied.increment(1);
                    if verdict.is_ok() {
                        verdict = Err(Denied {
                            policy: policy.view.policy.name.clone(),
                        });
                    }
                }
            }
        }
        verdict
    }
}

/// The policies of `owner`'s service that apply where it owns a port.
fn protecting(
    snapshot: &Snapshot,
    owner: &Owner,
    metrics: &mut HashMap<ResourceName, Arc<AuthzMetrics>>,
) -> Vec<Protecting> {
    snapshot
        .policies
        .values()
        .filter(|view| view.policy.service == owner.service)
        .filter(|view| {
            view.policy
                .port
                .is_none_or(|port| owner.ports.contains(&port))
        })
        .map(|view| {
            let metrics = metrics
                .entry(view.policy.name.clone())
                .or_insert_with(|| {
                    Arc::new(AuthzMetrics::new(
                        view.policy.name.to_string(),
                        owner.service.to_string(),
                    ))
                })
                .clone();
            Protecting {
                view: view.clone(),
                metrics,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
