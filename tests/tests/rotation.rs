//! Certificate rotation under load, counted: steady traffic through two proxies over
//! STRICT mTLS while leaves are renewed and while the root is rotated, with not one
//! failed request.
//!
//! Every request is a new TCP connection through an opaque (`tcp`) service, so each
//! one is a new mTLS handshake between the proxies with whatever certificates and
//! roots they hold at that moment: the load exercises the rotation rather than
//! riding on connections opened before it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use weft_e2e::mesh::{
    ca_fingerprints, http_app, metric_value, orders_and_frontend, raw_exchange, weftctl_ok,
    ControlPlane, Proxy,
};
use weft_e2e::{free_port, run, wait_for};

const WAIT: Duration = Duration::from_secs(20);
const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const BODY: &str = "orders-app";
/// Concurrent clients: enough to keep handshakes in flight at any moment, few
/// enough for a 2-core machine running other builds.
const WORKERS: usize = 4;

const MESH: &str = r#"
kind: Service
metadata: {name: orders, namespace: shop}
spec: {ports: [{port: 80, protocol: tcp}], mtls: STRICT}
"#;

struct Mesh {
    cp: ControlPlane,
    server: Proxy,
    client: Proxy,
    listen: SocketAddr,
}

fn start_mesh(path: &Path, cert_ttl: &str) -> Mesh {
    let cp = ControlPlane::start(
        path,
        &path.join("data"),
        free_port(),
        &["--cert-ttl", cert_ttl],
    );
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(MESH));
    let (app, _) = http_app(BODY);
    let (server, client, listen) = orders_and_frontend(&cp, path, app);
    wait_for("a first answer over mTLS", WAIT, || {
        raw_exchange(listen).ok().filter(|a| a.ends_with(BODY))
    });
    Mesh {
        cp,
        server,
        client,
        listen,
    }
}

/// Clients sending requests until stopped, each on a new connection; every answer
/// is checked and every failure kept.
struct Load {
    stop: Arc<AtomicBool>,
    succeeded: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let succeeded = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..WORKERS)
            .map(|_| {
                let (stop, succeeded, failures) =
                    (stop.clone(), succeeded.clone(), failures.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        match raw_exchange(addr) {
                            Ok(answer) if answer.ends_with(BODY) => {
                                succeeded.fetch_add(1, Ordering::SeqCst);
                            }
                            other => failures
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(format!("{other:?}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            succeeded,
            failures,
            workers,
        }
    }

    fn succeeded(&self) -> usize {
        self.succeeded.load(Ordering::SeqCst)
    }

    /// Waits until `more` further requests have succeeded: traffic really flows
    /// across the phase the caller just reached.
    fn wait_for_more(&self, more: usize, what: &str) {
        let target = self.succeeded() + more;
        wait_for(what, WAIT, || (self.succeeded() >= target).then_some(()));
    }

    /// Stops the clients: (succeeded, failures).
    fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            let _ = worker.join();
        }
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (self.succeeded.load(Ordering::SeqCst), failures)
    }
}

fn renewals(proxy: &Proxy) -> f64 {
    metric_value(
        &proxy.metrics(),
        &["weft_identity_renewals_total", "result=\"success\""],
    )
    .unwrap_or(0.0)
}

fn handshakes(proxy: &Proxy) -> f64 {
    metric_value(
        &proxy.metrics(),
        &[
            "weft_tls_connections_total",
            "direction=\"inbound\"",
            &format!("peer_identity=\"{FRONTEND}\""),
        ],
    )
    .unwrap_or(0.0)
}

#[test]
fn leaves_renewed_under_load_fail_no_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Renewal at 70% of 3 s: about every 2 s on each proxy.
    let mesh = start_mesh(dir.path(), "3s");
    let proxies = [&mesh.server, &mesh.client];
    let before = proxies.map(renewals);
    let handshakes_before = handshakes(&mesh.server);

    let load = Load::start(mesh.listen);
    load.wait_for_more(20, "traffic before the renewals");
    for (proxy, before) in proxies.iter().zip(before) {
        wait_for(
            &format!("{} to renew twice under load", proxy.node_id),
            WAIT,
            || (renewals(proxy) >= before + 2.0).then_some(()),
        );
    }
    load.wait_for_more(20, "traffic after the renewals");
    let (succeeded, failures) = load.stop();

    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(succeeded >= 40, "{succeeded}");
    // Each request was a handshake of its own, with the certificates of the moment.
    assert!(handshakes(&mesh.server) - handshakes_before >= succeeded as f64);
    eprintln!("leaf renewal under load: {succeeded} requests, 0 failed");
}

fn identity(proxy: &Proxy) -> serde_json::Value {
    proxy.config_dump()["identity"].clone()
}

/// Whether the proxy's current leaf verifies against `root_file` alone.
fn leaf_chains_to(proxy: &Proxy, dir: &Path, root_file: &str) -> bool {
    let Some(leaf) = identity(proxy)["certificate_chain"][0]
        .as_str()
        .map(str::to_owned)
    else {
        return false;
    };
    let file = format!("{}-leaf.pem", proxy.node_id);
    if std::fs::write(dir.join(&file), leaf).is_err() {
        return false;
    }
    run(Command::new("openssl")
        .args(["verify", "-CAfile", root_file, &file])
        .current_dir(dir))
    .status
    .success()
}

#[test]
fn a_root_rotated_under_load_fails_no_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let mesh = start_mesh(path, "4s");
    let proxies = [&mesh.server, &mesh.client];
    let old = ca_fingerprints(&mesh.cp);
    assert_eq!(old.len(), 1);

    let load = Load::start(mesh.listen);
    load.wait_for_more(20, "traffic before the rotation");

    weftctl_ok(&mesh.cp.address(), &["ca", "rotate"], None);
    let both = ca_fingerprints(&mesh.cp);
    assert_eq!((both.len(), &both[0]), (2, &old[0]));
    let bundle: serde_json::Value = serde_json::from_str(&weftctl_ok(
        &mesh.cp.address(),
        &["get", "tb", "weft-system/trust-bundle", "-o", "json"],
        None,
    ))
    .expect("bundle JSON");
    let new_root = bundle["spec"]["roots"][1].as_str().expect("the new root");
    std::fs::write(path.join("new-root.pem"), new_root).expect("write the new root");
    for proxy in proxies {
        wait_for(
            &format!(
                "{} to trust both roots and hold a new-root leaf",
                proxy.node_id
            ),
            WAIT,
            || {
                (identity(proxy)["roots"] == serde_json::json!(both)
                    && leaf_chains_to(proxy, path, "new-root.pem"))
                .then_some(())
            },
        );
    }
    load.wait_for_more(20, "traffic between new-root leaves");

    weftctl_ok(&mesh.cp.address(), &["ca", "finish-rotation"], None);
    let new = ca_fingerprints(&mesh.cp);
    assert_eq!(new, vec![both[1].clone()]);
    for proxy in proxies {
        wait_for(
            &format!("{} to trust only the new root", proxy.node_id),
            WAIT,
            || (identity(proxy)["roots"] == serde_json::json!(new)).then_some(()),
        );
    }
    load.wait_for_more(20, "traffic after the old root is gone");
    let (succeeded, failures) = load.stop();

    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(succeeded >= 80, "{succeeded}");
    eprintln!("root rotation under load: {succeeded} requests, 0 failed");
}
