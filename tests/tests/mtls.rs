//! mTLS between proxies end to end: endpoint identities announced by real proxies
//! and declared with weftctl.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use weft_e2e::mesh::{
    http_app, metric_value, orders_and_frontend, token_file, wait_for_identity, weftctl,
    weftctl_ok, App, ControlPlane, Proxy, ORDERS_STRICT as MESH,
};
use weft_e2e::{free_port, http_get, promtool_check, run, wait_for};

const WAIT: Duration = Duration::from_secs(20);
const ORDERS: &str = "spiffe://cluster.local/ns/shop/sa/orders";
const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";

#[test]
fn a_certified_proxy_announces_its_identity_on_its_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let cp = ControlPlane::start(path, &path.join("data"), free_port(), &[]);
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(MESH));
    let token_file = token_file(&cp, path, "shop", "orders");
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
    wait_for_identity(&proxy, "shop/orders", ORDERS);
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

/// An operator CA the test holds the key of, so it can sign leaves the mesh
/// would (and an expired one).
struct TestCa {
    params: CertificateParams,
    key: KeyPair,
}

impl TestCa {
    fn new(dir: &Path, name: &str) -> TestCa {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} root"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-signed");
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write ca");
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem())
            .expect("write ca key");
        TestCa { params, key }
    }

    /// Writes `<file>.pem` and `<file>-key.pem`: a leaf for `spiffe_id`, valid
    /// over `[from, to]` relative to now.
    fn leaf(&self, dir: &Path, file: &str, spiffe_id: &str, from: i64, to: i64) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into().expect("uri"))];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::seconds(from);
        params.not_after = now + time::Duration::seconds(to);
        let issuer = Issuer::new(self.params.clone(), &self.key);
        let cert = params.signed_by(&key, &issuer).expect("sign");
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).expect("write leaf");
        std::fs::write(dir.join(format!("{file}-key.pem")), key.serialize_pem())
            .expect("write leaf key");
    }
}

/// One `openssl s_client` exchange: sends an HTTP request after the handshake and
/// returns everything it printed (stdout and stderr).
fn s_client(dir: &Path, addr: SocketAddr, extra: &[&str]) -> String {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-tls1_3",
            "-showcerts",
        ])
        .args(["-CAfile", "mesh.pem", "-ign_eof"])
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"GET / HTTP/1.1\r\nhost: orders\r\nconnection: close\r\n\r\n");
    }
    let output = child.wait_with_output().expect("s_client output");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn served(output: &str) -> bool {
    output.contains("HTTP/1.1 200") && output.contains("orders-app")
}

/// The URI SAN of the first certificate `s_client -showcerts` printed.
fn server_identity(dir: &Path, output: &str) -> String {
    let begin = output
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = output[begin..]
        .find("-----END CERTIFICATE-----")
        .expect("its end")
        + begin
        + "-----END CERTIFICATE-----".len();
    std::fs::write(dir.join("server.pem"), &output[begin..end]).expect("write server cert");
    let text = run(Command::new("openssl")
        .args([
            "x509",
            "-in",
            "server.pem",
            "-noout",
            "-ext",
            "subjectAltName",
        ])
        .current_dir(dir));
    String::from_utf8_lossy(&text.stdout).into_owned()
}

/// Two proxies with mesh certificates: `frontend-1` with an explicit port for
/// shop/orders, and `orders-1` in front of the orders app, registered with its
/// identity, in a service of the given mTLS mode.
struct Mesh {
    cp: ControlPlane,
    server: Proxy,
    client: Proxy,
    /// The server proxy's inbound listener (its endpoint).
    inbound: SocketAddr,
    /// The client proxy's port for shop/orders.
    listen: SocketAddr,
    mesh_ca: TestCa,
    other_ca: TestCa,
}

/// `cert_ttl` is the control plane's `--cert-ttl`: how often the proxies renew.
fn start_mesh(path: &Path, mode: &str, cert_ttl: &str) -> Mesh {
    start_mesh_with(path, mode, cert_ttl, "http1")
}

/// [`start_mesh`] with the orders port declared as `protocol`.
fn start_mesh_with(path: &Path, mode: &str, cert_ttl: &str, protocol: &str) -> Mesh {
    let mesh_ca = TestCa::new(path, "mesh");
    let other_ca = TestCa::new(path, "other");
    let cp = ControlPlane::start(
        path,
        &path.join("data"),
        free_port(),
        &[
            "--ca-cert",
            path.join("mesh.pem").to_str().expect("utf-8"),
            "--ca-key",
            path.join("mesh-key.pem").to_str().expect("utf-8"),
            "--cert-ttl",
            cert_ttl,
        ],
    );
    weftctl_ok(
        &cp.address(),
        &["apply", "-f", "-"],
        Some(&MESH.replace("STRICT", mode).replace("http1", protocol)),
    );

    // The server: the orders app behind a proxy that registers itself.
    let (app, _) = http_app("orders-app");
    let (server, client, listen) = orders_and_frontend(&cp, path, app);
    let inbound = server.inbound;

    Mesh {
        cp,
        server,
        client,
        inbound,
        listen,
        mesh_ca,
        other_ca,
    }
}

fn tls_count(proxy: &Proxy, direction: &str, peer: &str) -> f64 {
    metric_value(
        &proxy.metrics(),
        &[
            "weft_tls_connections_total",
            &format!("direction=\"{direction}\""),
            &format!("peer_identity=\"{peer}\""),
        ],
    )
    .unwrap_or(0.0)
}

#[test]
fn proxies_talk_mtls_and_a_strict_inbound_accepts_only_mesh_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let Mesh {
        server,
        client,
        inbound,
        listen,
        mesh_ca,
        other_ca,
        // Bound, not `..`: a dropped control plane would be killed at once.
        cp: _cp,
    } = start_mesh(path, "STRICT", "24h");
    wait_for("an answer through both proxies over mTLS", WAIT, || {
        matches!(http_get(listen, "/"), Ok((200, body)) if body == "orders-app").then_some(())
    });
    assert!(
        tls_count(&client, "outbound", ORDERS) >= 1.0,
        "{}",
        client.metrics()
    );
    assert!(
        tls_count(&server, "inbound", FRONTEND) >= 1.0,
        "{}",
        server.metrics()
    );

    // STRICT: plaintext is closed.
    assert!(
        !matches!(http_get(inbound, "/"), Ok((200, _))),
        "plaintext reached a STRICT inbound"
    );

    // openssl as the peer: only a current mesh certificate gets through.
    mesh_ca.leaf(path, "good", FRONTEND, -60, 3600);
    mesh_ca.leaf(path, "expired", FRONTEND, -7200, -3600);
    other_ca.leaf(path, "foreign", FRONTEND, -60, 3600);
    let none = s_client(path, inbound, &[]);
    assert!(!served(&none), "no client certificate: {none}");
    let foreign = s_client(
        path,
        inbound,
        &["-cert", "foreign.pem", "-key", "foreign-key.pem"],
    );
    assert!(!served(&foreign), "another CA: {foreign}");
    let expired = s_client(
        path,
        inbound,
        &["-cert", "expired.pem", "-key", "expired-key.pem"],
    );
    assert!(!served(&expired), "expired: {expired}");
    let good = s_client(
        path,
        inbound,
        &["-cert", "good.pem", "-key", "good-key.pem"],
    );
    assert!(served(&good), "a mesh certificate: {good}");
    assert!(good.contains("Verify return code: 0"), "{good}");
    let san = server_identity(path, &good);
    assert!(san.contains(&format!("URI:{ORDERS}")), "{san}");
}

#[test]
fn permissive_takes_both_and_disabled_serves_plaintext_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let mesh = start_mesh(path, "PERMISSIVE", "24h");
    mesh.mesh_ca.leaf(path, "good", FRONTEND, -60, 3600);
    let mesh_client = ["-cert", "good.pem", "-key", "good-key.pem"];

    // PERMISSIVE: the proxies use mTLS, and a plaintext client is served too.
    wait_for("an answer through both proxies", WAIT, || {
        matches!(http_get(mesh.listen, "/"), Ok((200, body)) if body == "orders-app").then_some(())
    });
    assert!(tls_count(&mesh.client, "outbound", ORDERS) >= 1.0);
    let (status, body) = http_get(mesh.inbound, "/").expect("plaintext");
    assert_eq!((status, body.as_str()), (200, "orders-app"));
    let good = s_client(path, mesh.inbound, &mesh_client);
    assert!(served(&good), "{good}");

    // DISABLED, applied live: the inbound stops speaking TLS, and the client
    // proxy stops using it although the endpoint still has an identity.
    weftctl_ok(
        &mesh.cp.address(),
        &["apply", "-f", "-"],
        Some(&MESH.replace("STRICT", "DISABLED")),
    );
    wait_for("the inbound to refuse TLS", WAIT, || {
        (!served(&s_client(path, mesh.inbound, &mesh_client))).then_some(())
    });
    let (status, body) = http_get(mesh.inbound, "/").expect("plaintext");
    assert_eq!((status, body.as_str()), (200, "orders-app"));
    let before = tls_count(&mesh.client, "outbound", ORDERS);
    // A fresh connection each time (the app closes), so each request dials anew.
    for _ in 0..3 {
        let (status, body) = http_get(mesh.listen, "/").expect("through the mesh");
        assert_eq!((status, body.as_str()), (200, "orders-app"));
    }
    assert_eq!(tls_count(&mesh.client, "outbound", ORDERS), before);
}

fn renewals(proxy: &Proxy) -> f64 {
    metric_value(
        &proxy.metrics(),
        &["weft_identity_renewals_total", "result=\"success\""],
    )
    .unwrap_or(0.0)
}

#[test]
fn a_renewed_certificate_is_served_and_mtls_keeps_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let mesh = start_mesh(path, "STRICT", "3s");
    mesh.mesh_ca.leaf(path, "good", FRONTEND, -60, 3600);
    let mesh_client = ["-cert", "good.pem", "-key", "good-key.pem"];
    let first = s_client(path, mesh.inbound, &mesh_client);
    assert!(served(&first), "{first}");
    let first_cert = server_certificate(&first);

    // Renewal at 70% of 3 s: the inbound rebuilds its config from the new one.
    let renewed = renewals(&mesh.server);
    let client_renewed = renewals(&mesh.client);
    wait_for("the server proxy to renew", WAIT, || {
        (renewals(&mesh.server) > renewed).then_some(())
    });
    wait_for(
        "the inbound to present the renewed certificate",
        WAIT,
        || {
            let output = s_client(path, mesh.inbound, &mesh_client);
            (served(&output) && server_certificate(&output) != first_cert).then_some(())
        },
    );
    // Once the client has renewed too, the mesh still answers over mTLS.
    wait_for("the client proxy to renew", WAIT, || {
        (renewals(&mesh.client) > client_renewed).then_some(())
    });
    let (status, body) = http_get(mesh.listen, "/").expect("through the mesh");
    assert_eq!((status, body.as_str()), (200, "orders-app"));
}

/// The PEM of the first certificate in an `s_client -showcerts` output.
fn server_certificate(output: &str) -> String {
    let begin = output.find("-----BEGIN CERTIFICATE-----").unwrap_or(0);
    let end = output[begin..]
        .find("-----END CERTIFICATE-----")
        .map(|e| e + begin)
        .unwrap_or(begin);
    output[begin..end].to_owned()
}

#[test]
fn opaque_tcp_crosses_the_mesh_over_mtls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let mesh = start_mesh_with(path, "STRICT", "24h", "tcp");
    // Raw bytes through the client proxy's port: the app's HTTP answer comes back
    // unchanged, copied through TLS between the proxies.
    let exchange = || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(mesh.listen)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"GET / HTTP/1.1\r\nhost: orders\r\n\r\n")?;
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer)?;
        Ok(answer)
    };
    wait_for("bytes through both proxies over mTLS", WAIT, || {
        exchange().ok().filter(|a| a.ends_with("orders-app"))
    });
    assert!(tls_count(&mesh.client, "outbound", ORDERS) >= 1.0);
    assert!(tls_count(&mesh.server, "inbound", FRONTEND) >= 1.0);
}

/// The request series name the peer: the client proxy's outbound responses and
/// durations carry the identity of the endpoint that answered, the server
/// proxy's inbound requests, responses and durations that of the calling proxy;
/// a plaintext caller of a PERMISSIVE inbound is counted with an empty one.
#[test]
fn request_metrics_carry_the_answering_and_the_calling_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let mesh = start_mesh(path, "PERMISSIVE", "24h");
    let (client, server, listen) = (&mesh.client, &mesh.server, mesh.listen);
    for _ in 0..3 {
        wait_for("an answer through both proxies over mTLS", WAIT, || {
            matches!(http_get(listen, "/"), Ok((200, _))).then_some(())
        });
    }
    let dst = format!("dst_identity=\"{ORDERS}\"");
    let outbound = client.metrics();
    for metric in [
        "weft_responses_total{",
        "weft_request_duration_seconds_count{",
    ] {
        let seen = metric_value(
            &outbound,
            &[
                metric,
                "direction=\"outbound\"",
                "service=\"shop/orders\"",
                &dst,
            ],
        );
        assert!(seen.is_some_and(|n| n >= 3.0), "{metric} in {outbound}");
    }
    // Counted before an endpoint is picked: no peer.
    let requests = outbound
        .lines()
        .find(|l| l.starts_with("weft_requests_total{") && l.contains("shop/orders"))
        .expect("outbound requests");
    assert!(!requests.contains("dst_identity"), "{requests}");

    assert!(
        matches!(http_get(mesh.inbound, "/"), Ok((200, _))),
        "plaintext caller"
    );
    let client_id = format!("client_identity=\"{FRONTEND}\"");
    let received = server.metrics();
    for metric in [
        "weft_requests_total{",
        "weft_responses_total{",
        "weft_request_duration_seconds_count{",
    ] {
        let meshed = metric_value(
            &received,
            &[metric, "direction=\"inbound\"", "tls=\"true\"", &client_id],
        );
        assert!(meshed.is_some_and(|n| n >= 3.0), "{metric} in {received}");
        let plaintext = metric_value(
            &received,
            &[
                metric,
                "direction=\"inbound\"",
                "tls=\"false\"",
                "client_identity=\"\"",
            ],
        );
        assert_eq!(plaintext, Some(1.0), "{metric} in {received}");
    }
    promtool_check(&outbound);
    promtool_check(&received);
}

/// HTTP/1.1 between two mTLS proxies is multiplexed: eight slow requests at once
/// from the app's eight connections cross as eight streams of one HTTP/2 connection
/// (one handshake on each side). That the server proxy hands them to its app as
/// HTTP/1.1 the other tests show: their app (`http_app`) speaks nothing else.
#[test]
fn http1_between_proxies_is_multiplexed_over_one_mtls_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let cp = ControlPlane::start(path, &path.join("data"), free_port(), &[]);
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(MESH));
    let app = App::start(path, "orders-app", &["--delay-ms", "300"]);
    let (server, client, listen) = orders_and_frontend(&cp, path, app.addr);
    let requests: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || http_get(listen, "/")))
        .collect();
    for request in requests {
        let (status, body) = request.join().expect("thread").expect("GET");
        assert_eq!((status, body.as_str()), (200, "orders-app\n"));
    }
    assert_eq!(
        tls_count(&client, "outbound", ORDERS),
        1.0,
        "{}",
        client.metrics()
    );
    assert_eq!(
        tls_count(&server, "inbound", FRONTEND),
        1.0,
        "{}",
        server.metrics()
    );
}

/// Static stability with an identity: a client proxy restarted while the control
/// plane is down gets its routes and its certificate back from its state directory
/// (the key file readable by its owner only) and still reaches a STRICT server.
#[test]
fn a_proxy_restarted_without_its_control_plane_keeps_its_identity_from_the_state_dir() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let mut cp = ControlPlane::start(path, &path.join("data"), free_port(), &[]);
    weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(MESH));
    let (app, _) = http_app("orders-app");
    let server = weft_e2e::mesh::identified_proxy(
        &cp,
        path,
        "orders-1",
        ("shop", "orders"),
        Some(("orders", app)),
        &[],
    );
    let token = token_file(&cp, path, "shop", "frontend");
    let state = path.join("frontend-state");
    let listen = weft_e2e::loopback(free_port());
    let flags = [
        "--namespace".to_owned(),
        "shop".to_owned(),
        "--service-account".to_owned(),
        "frontend".to_owned(),
        "--identity-token-file".to_owned(),
        token.display().to_string(),
        "--state-dir".to_owned(),
        state.display().to_string(),
        "--upstream".to_owned(),
        format!("shop/orders={listen}"),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let client = Proxy::start(path, "frontend-1", &cp.address(), &flags);
    server.wait_ready();
    client.wait_ready();
    wait_for_identity(&client, "shop/orders", ORDERS);
    wait_for("an answer over mTLS", WAIT, || {
        matches!(http_get(listen, "/"), Ok((200, body)) if body == "orders-app").then_some(())
    });
    let serial = client.config_dump()["identity"]["serial"].clone();
    let key = path.join("frontend-state/identity.key");
    let mode = std::fs::metadata(&key)
        .expect("the saved key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    cp.proc.kill();
    drop(client);
    let client = Proxy::start(path, "frontend-2", &cp.address(), &flags);
    client.wait_ready();
    assert_eq!(client.config_dump()["identity"]["serial"], serial);
    let (status, body) = http_get(listen, "/").expect("GET through the restarted proxy");
    assert_eq!((status, body.as_str()), (200, "orders-app"));
    assert!(
        tls_count(&client, "outbound", ORDERS) >= 1.0,
        "{}",
        client.metrics()
    );
}
