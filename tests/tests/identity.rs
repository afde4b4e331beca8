//! Mesh identity end to end: the real control plane issues certificates to real
//! proxies, openssl checks them, and a scripted gRPC client probes what Certify refuses.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use weft_e2e::mesh::{
    ca_fingerprints, csr, join_token, metric_value, weftctl, weftctl_ok, ControlPlane, Proxy,
};
use weft_e2e::{free_port, run, wait_for};
use weft_proto::v1;
use weft_proto::v1::identity_client::IdentityClient;

const WAIT: Duration = Duration::from_secs(20);
const ORDERS: &str = "spiffe://cluster.local/ns/shop/sa/orders";

fn token(cp: &ControlPlane, namespace: &str, service_account: &str, ttl: &str) -> String {
    join_token(cp, namespace, service_account, &["--ttl", ttl])
}

fn identity(proxy: &Proxy) -> serde_json::Value {
    proxy.config_dump()["identity"].clone()
}

fn renewals(proxy: &Proxy) -> f64 {
    metric_value(
        &proxy.metrics(),
        &["weft_identity_renewals_total", "result=\"success\""],
    )
    .unwrap_or(0.0)
}

fn openssl(args: &[&str], dir: &Path) -> String {
    let output = run(Command::new("openssl").args(args).current_dir(dir));
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_proxy_gets_a_certificate_openssl_verifies_renews_it_and_the_ca_key_never_shows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    // An operator CA made by openssl, so that the test knows the key to look for.
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/O=weft test/CN=operator root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ],
        path,
    );
    let key_pem = std::fs::read_to_string(path.join("ca-key.pem")).expect("key");
    let key_body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let key_lines: Vec<&str> = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();

    let cp = ControlPlane::start(
        path,
        &path.join("data"),
        free_port(),
        &[
            "--ca-cert",
            path.join("ca.pem").to_str().expect("utf-8"),
            "--ca-key",
            path.join("ca-key.pem").to_str().expect("utf-8"),
            "--cert-ttl",
            "3s",
        ],
    );
    let secret = token(&cp, "shop", "orders", "1h");
    let token_file = path.join("token");
    std::fs::write(&token_file, &secret).expect("write token");
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
        ],
    );
    proxy.wait_ready();
    let first = identity(&proxy);
    assert_eq!(first["spiffe_id"], ORDERS, "{first}");
    assert_eq!(first["trust_domain"], "cluster.local");

    // openssl agrees: the chain verifies against the operator's root, and the only
    // identity is the SPIFFE URI.
    let leaf = first["certificate_chain"][0].as_str().expect("leaf pem");
    std::fs::write(path.join("leaf.pem"), leaf).expect("write leaf");
    let verified = openssl(&["verify", "-CAfile", "ca.pem", "leaf.pem"], path);
    assert_eq!(verified.trim(), "leaf.pem: OK");
    let text = openssl(&["x509", "-in", "leaf.pem", "-noout", "-text"], path);
    assert!(text.contains(&format!("URI:{ORDERS}")), "{text}");
    assert!(text.contains("TLS Web Server Authentication, TLS Web Client Authentication"));
    assert!(text.contains("CA:FALSE"), "{text}");

    // Renewal: with a 3 s lifetime the serial changes about every 2 s, and the proxy
    // stays ready throughout.
    let serial = first["serial"].as_str().expect("serial").to_owned();
    let before = renewals(&proxy);
    wait_for("two renewals", WAIT, || {
        assert!(proxy.is_ready(), "the proxy became unready during renewal");
        let now = identity(&proxy);
        (now["serial"] != serial.as_str() && renewals(&proxy) >= before + 2.0).then_some(())
    });
    let expiry = metric_value(
        &proxy.metrics(),
        &["weft_identity_cert_expiry_timestamp_seconds"],
    )
    .expect("expiry gauge");
    assert!(expiry > 0.0);

    // The CA key appears nowhere an operator or a proxy can read.
    let mut seen = vec![
        cp.proc.log_text(),
        proxy.proc.log_text(),
        serde_json::to_string(&proxy.config_dump()).expect("json"),
        weftctl_ok(&cp.address(), &["get", "trustbundle", "-o", "yaml"], None),
        weftctl_ok(&cp.address(), &["get", "trustbundle", "-o", "json"], None),
        weftctl_ok(&cp.address(), &["ca", "status"], None),
        weftctl_ok(&cp.address(), &["token", "list"], None),
    ];
    let refused = weftctl(&cp.address(), &["ca", "rotate"], None);
    assert!(!refused.status.success());
    seen.push(String::from_utf8_lossy(&refused.stderr).into_owned());
    for text in &seen {
        let flat: String = text.split_whitespace().collect();
        assert!(!flat.contains(&key_body), "the CA key leaked");
        for line in &key_lines {
            assert!(!text.contains(line), "a line of the CA key leaked: {text}");
        }
        assert!(!text.contains(&secret), "the join token leaked");
    }
}

async fn certify(
    cp: &ControlPlane,
    token: &str,
    csr: Vec<u8>,
) -> Result<v1::CertifyResponse, tonic::Status> {
    let mut client = IdentityClient::connect(format!("http://{}", cp.address()))
        .await
        .expect("connect");
    client
        .certify(v1::CertifyRequest {
            token: token.to_owned(),
            csr,
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn certify_refuses_other_identities_bad_csrs_and_revoked_or_expired_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = ControlPlane::start(dir.path(), &dir.path().join("data"), free_port(), &[]);
    let orders = token(&cp, "shop", "orders", "1h");

    let issued = certify(&cp, &orders, csr(ORDERS)).await.expect("certified");
    assert_eq!(issued.spiffe_id, ORDERS);
    assert_eq!(issued.certificate_chain.len(), 1);
    assert_eq!(issued.trust_bundle.expect("bundle").roots.len(), 1);

    let denied = certify(&cp, &orders, csr("spiffe://cluster.local/ns/shop/sa/admin"))
        .await
        .expect_err("another identity");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    let denied = certify(&cp, &orders, csr("spiffe://other.domain/ns/shop/sa/orders"))
        .await
        .expect_err("another trust domain");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    let malformed = certify(&cp, &orders, b"not a csr".to_vec())
        .await
        .expect_err("garbage");
    assert_eq!(
        malformed.code(),
        tonic::Code::InvalidArgument,
        "{malformed:?}"
    );
    let unknown = certify(&cp, "weft.000000000000.0000", csr(ORDERS))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), tonic::Code::Unauthenticated);

    // Revoked: by its public id, which `token list` shows.
    let listed = weftctl_ok(&cp.address(), &["token", "list"], None);
    let id = orders.split('.').nth(1).expect("id");
    assert!(listed.contains(id) && listed.contains("valid"), "{listed}");
    weftctl_ok(&cp.address(), &["token", "revoke", id], None);
    let revoked = certify(&cp, &orders, csr(ORDERS))
        .await
        .expect_err("revoked");
    assert_eq!(revoked.code(), tonic::Code::Unauthenticated);
    assert!(revoked.message().contains("revoked"), "{revoked:?}");
    assert!(weftctl_ok(&cp.address(), &["token", "list"], None).contains("revoked"));

    // Expired: a one-second token, used two seconds later.
    // Polled rather than slept: the token works until its expiry, then never again.
    let short = token(&cp, "shop", "orders", "1s");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let expired = loop {
        match certify(&cp, &short, csr(ORDERS)).await {
            Err(status) => break status,
            Ok(_) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the 1 s token never expired"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(expired.code(), tonic::Code::Unauthenticated);
    assert!(expired.message().contains("expired"), "{expired:?}");

    // A proxy with a revoked token never becomes ready, and says why.
    let proxy = Proxy::start(
        dir.path(),
        "orders-revoked",
        &cp.address(),
        &[
            "--namespace",
            "shop",
            "--service-account",
            "orders",
            "--identity-token",
            &orders,
        ],
    );
    let error = wait_for("the proxy to report the refusal", WAIT, || {
        identity(&proxy)["last_error"].as_str().map(str::to_owned)
    });
    assert!(error.contains("revoked"), "{error}");
    assert!(!proxy.is_ready());
}

#[test]
fn a_root_rotation_reaches_the_proxy_and_new_leaves_chain_to_the_new_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = ControlPlane::start(
        dir.path(),
        &dir.path().join("data"),
        free_port(),
        &["--cert-ttl", "4s"],
    );
    let old = ca_fingerprints(&cp);
    assert_eq!(old.len(), 1);
    let secret = token(&cp, "shop", "orders", "1h");
    let proxy = Proxy::start(
        dir.path(),
        "orders-1",
        &cp.address(),
        &[
            "--namespace",
            "shop",
            "--service-account",
            "orders",
            "--identity-token",
            &secret,
        ],
    );
    proxy.wait_ready();
    assert_eq!(identity(&proxy)["roots"], serde_json::json!(old));

    weftctl_ok(&cp.address(), &["ca", "rotate"], None);
    let both = ca_fingerprints(&cp);
    assert_eq!(both.len(), 2);
    assert_eq!(both[0], old[0]);
    wait_for("the proxy to trust both roots", WAIT, || {
        (identity(&proxy)["roots"] == serde_json::json!(both)).then_some(())
    });
    // The next renewal is signed by the new root: openssl verifies it against the
    // new root alone.
    let path = dir.path();
    let bundle: serde_json::Value = serde_json::from_str(&weftctl_ok(
        &cp.address(),
        &[
            "get",
            "trustbundle",
            "weft-system/trust-bundle",
            "-o",
            "json",
        ],
        None,
    ))
    .expect("json");
    let new_root = bundle["spec"]["roots"][1].as_str().expect("new root");
    std::fs::write(path.join("new-root.pem"), new_root).expect("write");
    wait_for("a leaf from the new root", WAIT, || {
        let leaf = identity(&proxy)["certificate_chain"][0]
            .as_str()?
            .to_owned();
        std::fs::write(path.join("leaf.pem"), leaf).ok()?;
        let output = run(Command::new("openssl")
            .args(["verify", "-CAfile", "new-root.pem", "leaf.pem"])
            .current_dir(path));
        output.status.success().then_some(())
    });
    assert!(proxy.is_ready());

    weftctl_ok(&cp.address(), &["ca", "finish-rotation"], None);
    let new = ca_fingerprints(&cp);
    assert_eq!(new, vec![both[1].clone()]);
    wait_for("the proxy to trust only the new root", WAIT, || {
        (identity(&proxy)["roots"] == serde_json::json!(new)).then_some(())
    });
    assert!(proxy.is_ready());
}
