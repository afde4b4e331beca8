use std::collections::HashMap;
use std::sync::Arc;

use weft_proto::model::{SpiffeId, TrustDomain};

use super::{Caller, InboundPolicies};
use crate::local::tests::{mesh, pod, workload, POD_MESH};
use crate::local::{membership, Local};

fn caller(account: &str, port: u16) -> Caller {
    let domain = TrustDomain::new("cluster.local").expect("domain");
    Caller {
        identity: Some(SpiffeId::new(domain, "shop", account).expect("id")),
        port,
    }
}

fn plaintext(port: u16) -> Caller {
    Caller {
        identity: None,
        port,
    }
}

/// The policy that denied `caller`, or "allowed".
fn verdict(policies: &InboundPolicies, caller: &Caller) -> String {
    match policies.check(caller) {
        Ok(()) => "allowed".to_owned(),
        Err(denied) => denied.policy.to_string(),
    }
}

/// [`POD_MESH`], with a policy for web's grpc port (90) only.
fn with_port_policy() -> String {
    format!(
        "{POD_MESH}---
kind: AuthorizationPolicy
metadata: {{name: grpc-callers, namespace: shop}}
spec: {{service: web, port: 90, allow: [spiffe://cluster.local/ns/shop/sa/api]}}
"
    )
}

#[test]
fn with_flags_a_port_policy_protects_the_workload_port_of_that_name_only() {
    let yaml = with_port_policy().replace("{service: web, allow", "{service: web, port: 80, allow");
    let snapshot = mesh(&yaml);
    let flags = workload("web", &[("http", 15080), ("grpc", 15090), ("both", 15070)]);
    let local = Local::declared(&snapshot, "shop", &flags);
    let mut metrics = HashMap::new();
    let policies = InboundPolicies::build(&snapshot, &local, &mut metrics);
    assert_eq!(metrics.len(), 2, "only the local service's policies count");
    assert_eq!(verdict(&policies, &caller("api", 15090)), "allowed");
    assert_eq!(
        verdict(&policies, &caller("web", 15090)),
        "shop/grpc-callers"
    );
    assert!(policies.check(&plaintext(15090)).is_err());
    assert_eq!(verdict(&policies, &caller("frontend", 15080)), "allowed");
    assert_eq!(
        verdict(&policies, &caller("api", 15080)),
        "shop/web-callers"
    );
    assert_eq!(verdict(&policies, &caller("anyone", 15070)), "allowed");
}

#[test]
fn with_flags_a_policy_without_a_port_protects_every_port() {
    let snapshot = mesh(POD_MESH);
    let local = Local::declared(&snapshot, "shop", &workload("web", &[("http", 15006)]));
    let policies = InboundPolicies::build(&snapshot, &local, &mut HashMap::new());
    assert_eq!(verdict(&policies, &caller("frontend", 15006)), "allowed");
    // A port the flags do not list is still the service's, as it always was.
    assert_eq!(verdict(&policies, &caller("frontend", 9999)), "allowed");
    assert_eq!(verdict(&policies, &caller("ops", 9999)), "shop/web-callers");
}

fn learned(yaml: &str) -> InboundPolicies {
    let snapshot = mesh(yaml);
    let local = membership(&snapshot, pod());
    InboundPolicies::build(&snapshot, &local, &mut HashMap::new())
}

#[test]
fn learned_services_guard_their_own_ports_only() {
    let policies = learned(POD_MESH);
    assert_eq!(verdict(&policies, &caller("frontend", 8080)), "allowed");
    assert_eq!(verdict(&policies, &caller("ops", 8080)), "shop/web-callers");
    assert_eq!(verdict(&policies, &caller("ops", 9090)), "allowed");
    assert_eq!(
        verdict(&policies, &caller("frontend", 9090)),
        "shop/admin-callers"
    );
    // A port no service owns has no policy.
    assert_eq!(verdict(&policies, &caller("stranger", 15020)), "allowed");
    assert_eq!(verdict(&policies, &plaintext(15020)), "allowed");

    // A port policy protects the pod ports serving that service port, and no other.
    let policies = learned(&with_port_policy());
    assert_eq!(verdict(&policies, &caller("api", 9091)), "allowed");
    assert_eq!(verdict(&policies, &caller("api", 8080)), "shop/web-callers");
    assert_eq!(
        verdict(&policies, &caller("stranger", 9091)),
        "shop/grpc-callers"
    );
}

#[test]
fn a_shared_port_lets_through_only_callers_every_owner_allows() {
    let policies = learned(POD_MESH);
    assert_eq!(
        verdict(&policies, &caller("frontend", 7070)),
        "shop/admin-callers"
    );
    assert_eq!(verdict(&policies, &caller("ops", 7070)), "shop/web-callers");
    let both = POD_MESH.replace(
        "sa/ops]",
        "sa/ops, spiffe://cluster.local/ns/shop/sa/frontend]",
    );
    assert_eq!(
        verdict(&learned(&both), &caller("frontend", 7070)),
        "allowed"
    );
    // A service open on the port does not open what the other guards.
    let admin_http_only =
        POD_MESH.replace("{service: admin, allow", "{service: admin, port: 81, allow");
    let policies = learned(&admin_http_only);
    assert_eq!(verdict(&policies, &caller("frontend", 7070)), "allowed");
    assert_eq!(verdict(&policies, &caller("ops", 7070)), "shop/web-callers");
    assert_eq!(
        verdict(&policies, &caller("frontend", 9090)),
        "shop/admin-callers"
    );
}

#[test]
fn counters_are_kept_across_snapshots() {
    let mut metrics = HashMap::new();
    let first = mesh(POD_MESH);
    let local = membership(&first, pod());
    InboundPolicies::build(&first, &local, &mut metrics);
    let kept = metrics.clone();
    assert_eq!(kept.len(), 2);
    let opened = POD_MESH.replace("sa/frontend]", "sa/frontend, spiffe://cluster.local/*]");
    let policies = InboundPolicies::build(&mesh(&opened), &local, &mut metrics);
    for (name, counters) in &kept {
        assert!(Arc::ptr_eq(counters, &metrics[name]), "{name}");
    }
    assert_eq!(verdict(&policies, &caller("ops", 8080)), "allowed");
}
