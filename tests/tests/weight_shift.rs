//! A canary rollout under steady load, end to end: keep-alive clients send a steady
//! stream through the real client proxy while `weftctl apply` shifts an HTTPRoute's
//! weights 90/10 → 50/50 → 0/100. No request may fail, and each shift must take
//! effect within one push: once the control plane reports that the proxy
//! acknowledged the route's new version, the requests sent from then on follow the
//! new weights (after the 0/100 ACK, not one reaches v1).

use std::time::Duration;

use serde_json::Value;
use weft_e2e::load::{Load, Options, Outcome};
use weft_e2e::mesh::{client_proxy, weftctl_ok, App, ControlPlane};
use weft_e2e::{free_port, http_get, wait_for};

const WAIT: Duration = Duration::from_secs(20);

/// Requests measured per phase, after its ACK.
const PER_PHASE: usize = 1_500;

/// `web` (the service clients call, with no endpoints of its own) and the two
/// versions a route splits it between, each a `weft-test-app`.
fn mesh(v1: &App, v2: &App) -> String {
    let mut yaml = String::from(
        "kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{port: 80, protocol: http1}]
",
    );
    for app in [v1, v2] {
        yaml.push_str(&format!(
            "---
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec:
  ports: [{{port: 80, protocol: http1}}]
---
kind: Endpoints
metadata: {{name: {name}, namespace: shop}}
spec:
  endpoints: [{{address: {ip}, port: {port}}}]
",
            name = app.name,
            ip = app.addr.ip(),
            port = app.addr.port()
        ));
    }
    yaml
}

fn split(v1: u32, v2: u32) -> String {
    format!(
        "kind: HTTPRoute
metadata: {{name: canary, namespace: shop}}
spec:
  parentRefs: [{{name: web, port: 80}}]
  rules:
  - backendRefs: [{{name: v1, port: 80, weight: {v1}}}, {{name: v2, port: 80, weight: {v2}}}]
"
    )
}

/// Applies the split and returns the version the control plane stored it at.
fn apply(cp: &str, v1: u32, v2: u32) -> u64 {
    weftctl_ok(cp, &["apply", "-f", "-"], Some(&split(v1, v2)));
    let stored = weftctl_ok(cp, &["get", "httproute", "shop/canary", "-o", "json"], None);
    let stored: Value = serde_json::from_str(&stored).expect("get -o json");
    let document = stored.as_array().and_then(|d| d.first()).unwrap_or(&stored);
    document["metadata"]["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("no version in {stored}"))
}

/// Waits until the control plane reports that proxy `node` acknowledged HTTPRoutes
/// up to `version`.
fn wait_for_ack(cp: &str, node: &str, version: u64) {
    wait_for(
        &format!("{node} to ACK route version {version}"),
        WAIT,
        || {
            let status = weftctl_ok(cp, &["status", "-o", "json"], None);
            let status: Value = serde_json::from_str(&status).ok()?;
            let proxy = status.as_array()?.iter().find(|p| p["id"] == node)?;
            let acked = proxy["types"]
                .as_array()?
                .iter()
                .find(|t| t["type"] == "weft.v1.HTTPRoute")?["ackedVersion"]
                .as_u64()?;
            (acked >= version).then_some(())
        },
    );
}

/// Answers per app among `outcomes`.
fn count(outcomes: &[&Outcome], app: &str) -> usize {
    outcomes
        .iter()
        .filter(|o| o.served_by.as_deref() == Some(app))
        .count()
}

#[test]
fn shifting_weights_under_steady_load_loses_nothing_and_takes_effect_at_the_ack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = ControlPlane::start(dir.path(), &dir.path().join("data"), free_port(), &[]);
    let cp = cp.address();
    let v1 = App::start(dir.path(), "v1", &[]);
    let v2 = App::start(dir.path(), "v2", &[]);
    let (client, listen) = client_proxy(dir.path(), &cp, "client", "shop/web", &[]);
    weftctl_ok(&cp, &["apply", "-f", "-"], Some(&mesh(&v1, &v2)));
    client.wait_ready();
    let version = apply(&cp, 90, 10);
    wait_for_ack(&cp, "client", version);
    wait_for("the route to answer", WAIT, || {
        matches!(http_get(listen, "/"), Ok((200, b)) if b.trim() == "v1" || b.trim() == "v2")
            .then_some(())
    });

    // Eight keep-alive connections, 400 requests a second between them, for the
    // whole test.
    let options = Options {
        rate: 400,
        connections: 8,
        ..Options::default()
    };
    let load = Load::start(listen, options);
    // (v1, v2, when the apply began, when the ACK was seen), from the load's start.
    let mut phases = Vec::new();
    for (index, (w1, w2)) in [(90, 10), (50, 50), (0, 100)].into_iter().enumerate() {
        let applied_at = load.elapsed();
        if index > 0 {
            let version = apply(&cp, w1, w2);
            wait_for_ack(&cp, "client", version);
        }
        let acked_at = load.elapsed();
        phases.push((w1, w2, applied_at, acked_at));
        load.wait_for_successes(PER_PHASE, WAIT);
    }
    let report = load.stop();

    let failed = report.failed();
    assert!(failed.is_empty(), "requests failed: {}", report.summary());
    for (i, &(w1, w2, applied_at, acked_at)) in phases.iter().enumerate() {
        let end = phases.get(i + 1).map_or(Duration::MAX, |p| p.2);
        let after: Vec<&Outcome> = report
            .outcomes
            .iter()
            .filter(|o| o.at >= acked_at && o.at < end)
            .collect();
        let during: Vec<&Outcome> = report
            .outcomes
            .iter()
            .filter(|o| o.at >= applied_at && o.at < acked_at)
            .collect();
        let (n1, n2) = (count(&after, "v1"), count(&after, "v2"));
        assert_eq!(n1 + n2, after.len(), "answers from neither app");
        let share = 100.0 * n2 as f64 / after.len() as f64;
        eprintln!(
            "{w1}/{w2}: {} requests after the ACK, v1 {n1} v2 {n2} (v2 {share:.2}%); \
             {} between apply and ACK ({:?}), v1 {} v2 {}",
            after.len(),
            during.len(),
            acked_at - applied_at,
            count(&during, "v1"),
            count(&during, "v2"),
        );
        // Four standard deviations of a binomial share over this many requests.
        let p = f64::from(w2) / f64::from(w1 + w2);
        let tolerance = 400.0 * (p * (1.0 - p) / after.len() as f64).sqrt();
        assert!(
            (share - 100.0 * p).abs() <= tolerance,
            "{w1}/{w2}: v2 share {share:.2}% (±{tolerance:.2})"
        );
        if w1 == 0 {
            // Nothing sent after the ACK reaches the drained version.
            assert_eq!(n1, 0, "requests reached v1 after the 0/100 ACK");
        }
    }
    eprintln!("{}", report.summary());
}
