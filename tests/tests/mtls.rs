//! mTLS between proxies end to end: endpoint identities announced by real proxies
//! and declared with weftctl.

use std::time::Duration;

use weft_e2e::mesh::{resource, weftctl, weftctl_ok, ControlPlane, Proxy};
use weft_e2e::{free_port, wait_for};

const WAIT: Duration = Duration::from_secs(20);
const ORDERS: &str = "spiffe://cluster.local/ns/shop/sa/orders";

const MESH: &str = r#"
kind: Service
metadata: {name: orders, namespace: shop}
spec:
  ports: [{port: 80, protocol: http1}]
  mtls: STRICT
"#;

#[test]
fn a_certified_proxy_announces_its_identity_on_its_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let cp = ControlPlane::start(path, &path.join("data"), free_port(), &[]);
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(MESH));
    let secret = weftctl_ok(
        &cp.address(),
        &[
            "token",
            "create",
            "--namespace",
            "shop",
            "--service-account",
            "orders",
        ],
        None,
    );
    let token_file = path.join("token");
    std::fs::write(&token_file, secret.trim()).expect("write token");
    let proxy = Proxy::start(
        path,
        "orders-1",
        &cp.address(),
        &[
            "--namespace",
            "shop",
            "--service-account",
            "orders",
            "--identity-token-file",
            token_file.to_str().expect("utf-8"),
            "--service",
            "orders",
            "--workload-address",
            "127.0.0.1",
            "--workload-port",
            "8080",
        ],
    );
    proxy.wait_ready();
    // The certificate comes after the first Hello; the proxy reannounces.
    wait_for("the endpoint to carry the identity", WAIT, || {
        let endpoints = resource(&proxy.config_dump(), "endpoints", "shop/orders")?;
        (endpoints["endpoints"][0]["identity"] == ORDERS).then_some(())
    });
    let service = weftctl_ok(
        &cp.address(),
        &["get", "service", "shop/orders", "-o", "yaml"],
        None,
    );
    assert!(service.contains("mtls: STRICT"), "{service}");
}

#[test]
fn weftctl_refuses_a_malformed_identity_or_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let cp = ControlPlane::start(path, &path.join("data"), free_port(), &[]);
    let bad_identity = format!(
        "{MESH}---\nkind: Endpoints\nmetadata: {{name: orders, namespace: shop}}\nspec:\n  \
         endpoints:\n  - {{address: 10.0.0.5, port: 80, identity: \"spiffe://cluster.local/x\"}}\n"
    );
    let output = weftctl(&cp.address(), &["apply", "-f", "-"], Some(&bad_identity));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("identity"), "{stderr}");

    let bad_mode = MESH.replace("STRICT", "strict");
    let output = weftctl(&cp.address(), &["apply", "-f", "-"], Some(&bad_mode));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("mtls"), "{stderr}");
}
