//! Authorization on the inbound side: which callers may reach the local workload.
//!
//! Sits between the mTLS handshake (which yields the caller's SPIFFE ID) and the
//! local app. Each snapshot's policies for the local service are resolved once into
//! [`InboundPolicies`] (the app ports each one protects, its counters); a request or
//! TCP connection then only walks that short list. The decision rules themselves are
//! the model's ([`weft_proto::model::decide`]), shared with the control plane.

use std::collections::HashMap;
use std::sync::Arc;

use weft_proto::model::{decide, AuthorizationPolicy, Decision, ResourceName, SpiffeId};

use crate::config::WorkloadPort;
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

/// The policies protecting the local workload in one snapshot, in name order.
#[derive(Debug, Default)]
pub struct InboundPolicies {
    policies: Vec<Protecting>,
}

#[derive(Debug)]
struct Protecting {
    view: Arc<PolicyView>,
    /// The workload ports the policy's service port maps to; `None`: every port.
    ports: Option<Vec<u16>>,
    metrics: Arc<AuthzMetrics>,
}

impl AsRef<AuthorizationPolicy> for Protecting {
    fn as_ref(&self) -> &AuthorizationPolicy {
        &self.view.policy
    }
}

impl InboundPolicies {
    /// Resolves the policies naming `service` (the local one). A policy for one
    /// service port protects the workload ports announced under that port's name.
    /// `metrics` carries the counters across snapshots, so each policy's series is
    /// registered once.
    pub fn build(
        snapshot: &Snapshot,
        service: &ResourceName,
        workload_ports: &[WorkloadPort],
        metrics: &mut HashMap<ResourceName, Arc<AuthzMetrics>>,
    ) -> InboundPolicies {
        let declared = snapshot.services.get(service);
        let policies = snapshot
            .policies
            .values()
            .filter(|view| view.policy.service == *service)
            .map(|view| {
                let ports = view.policy.port.map(|port| {
                    workload_ports
                        .iter()
                        .filter(|local| {
                            declared
                                .and_then(|d| d.service.port_named(&local.name))
                                .is_some_and(|p| p.port == port)
                        })
                        .map(|local| local.port)
                        .collect()
                });
                let metrics = metrics
                    .entry(view.policy.name.clone())
                    .or_insert_with(|| {
                        Arc::new(AuthzMetrics::new(
                            view.policy.name.to_string(),
                            service.to_string(),
                        ))
                    })
                    .clone();
                Protecting {
                    view: view.clone(),
                    ports,
                    metrics,
                }
            })
            .collect();
        InboundPolicies { policies }
    }

    /// Decides for one caller and counts the decision under the deciding policy.
    pub fn check(&self, caller: &Caller) -> Result<(), Denied> {
        let applicable = self.policies.iter().filter(|p| {
            p.ports
                .as_ref()
                .is_none_or(|ports| ports.contains(&caller.port))
        });
        match decide(applicable, caller.identity.as_ref()) {
            Decision::Open => Ok(()),
            Decision::Allowed(policy) => {
                policy.metrics.allowed.increment(1);
                Ok(())
            }
            Decision::Denied(policy) => {
                policy.metrics.denied.increment(1);
                Err(Denied {
                    policy: policy.view.policy.name.clone(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap as Map;
    use weft_proto::model::{Service, TrustDomain};
    use weft_proto::v1;

    use crate::snapshot::{Policy, ServiceView};

    fn snapshot(policies: &[v1::AuthorizationPolicy]) -> Snapshot {
        let service = Service::try_from(&v1::Service {
            namespace: "shop".into(),
            name: "orders".into(),
            ports: vec![
                v1::ServicePort {
                    name: "http".into(),
                    port: 80,
                    protocol: "http1".into(),
                },
                v1::ServicePort {
                    name: "db".into(),
                    port: 5432,
                    protocol: "tcp".into(),
                },
            ],
            ..Default::default()
        })
        .expect("service");
        let mut services = Map::new();
        services.insert(
            service.name.clone(),
            Arc::new(ServiceView {
                service,
                policy: Policy::P2cEwma,
                version: 1,
            }),
        );
        let policies = policies
            .iter()
            .map(|p| {
                let policy = AuthorizationPolicy::try_from(p).expect("policy");
                (
                    policy.name.clone(),
                    Arc::new(PolicyView { policy, version: 1 }),
                )
            })
            .collect();
        Snapshot::new(services, Map::new()).with_policies(policies)
    }

    fn policy(name: &str, service: &str, port: u32, allow: &[&str]) -> v1::AuthorizationPolicy {
        v1::AuthorizationPolicy {
            namespace: "shop".into(),
            name: name.into(),
            service: service.into(),
            port,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            default_action: String::new(),
        }
    }

    fn caller(sa: &str, port: u16) -> Caller {
        let domain = TrustDomain::new("cluster.local").expect("domain");
        Caller {
            identity: Some(SpiffeId::new(domain, "shop", sa).expect("id")),
            port,
        }
    }

    #[test]
    fn a_port_policy_protects_the_workload_port_of_that_name_only() {
        let snapshot = snapshot(&[
            policy(
                "db-callers",
                "orders",
                5432,
                &["spiffe://cluster.local/ns/shop/sa/api"],
            ),
            policy("elsewhere", "users", 0, &[]),
        ]);
        let local = ResourceName::parse("shop/orders").expect("name");
        let ports = [
            WorkloadPort {
                name: "http".into(),
                port: 8080,
            },
            WorkloadPort {
                name: "db".into(),
                port: 15432,
            },
        ];
        let mut metrics = HashMap::new();
        let policies = InboundPolicies::build(&snapshot, &local, &ports, &mut metrics);
        assert_eq!(metrics.len(), 1, "only the local service's policies count");
        assert_eq!(policies.check(&caller("web", 8080)), Ok(()));
        assert_eq!(policies.check(&caller("api", 15432)), Ok(()));
        let denied = policies.check(&caller("web", 15432)).expect_err("denied");
        assert_eq!(denied.policy.to_string(), "shop/db-callers");
        let plaintext = Caller {
            identity: None,
            port: 15432,
        };
        assert!(policies.check(&plaintext).is_err());
    }

    #[test]
    fn counters_are_kept_across_snapshots() {
        let local = ResourceName::parse("shop/orders").expect("name");
        let mut metrics = HashMap::new();
        let first = snapshot(&[policy("callers", "orders", 0, &[])]);
        InboundPolicies::build(&first, &local, &[], &mut metrics);
        let kept = metrics.values().next().cloned().expect("counters");
        let second = snapshot(&[policy(
            "callers",
            "orders",
            0,
            &["spiffe://cluster.local/*"],
        )]);
        let policies = InboundPolicies::build(&second, &local, &[], &mut metrics);
        assert!(Arc::ptr_eq(
            &kept,
            metrics.values().next().expect("counters")
        ));
        assert_eq!(policies.check(&caller("web", 80)), Ok(()));
    }
}
