//! Handshakes between the configs over in-memory pipes: who is accepted, who is not.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use rustls::ClientConfig;
use tokio::io::duplex;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weft_proto::model::SpiffeId;

use super::{server_name, verify, Alpn, Configs};
use crate::identity::Identity;

const ORDERS: &str = "spiffe://cluster.local/ns/shop/sa/orders";
const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    cert: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("root").der().clone();
        Ca { params, key, cert }
    }

    /// An identity for `id` whose chain this CA signed, trusting `roots`.
    fn identity(&self, id: &str, roots: &[&Ca]) -> Arc<Identity> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(id.try_into().expect("uri"))];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let issuer = Issuer::new(self.params.clone(), &self.key);
        let leaf = params.signed_by(&key, &issuer).expect("leaf");
        Arc::new(Identity::for_tests(
            SpiffeId::parse(id).expect("id"),
            vec![leaf.der().clone()],
            PrivatePkcs8KeyDer::from(key.serialize_der()),
            roots.iter().map(|ca| ca.cert.clone()).collect(),
        ))
    }
}

/// Runs one handshake: whether the client and the server each completed it, and
/// what the server learnt about its peer.
async fn handshake(
    server: &Configs,
    client: Arc<ClientConfig>,
) -> (bool, bool, Option<SpiffeId>, Option<Vec<u8>>) {
    let (client_io, server_io) = duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(server.server.clone());
    let connector = TlsConnector::from(client);
    let (client, server) = tokio::join!(
        async {
            // TLS 1.3 reports a refused client certificate after the client's
            // handshake ends: read once so the alert arrives.
            let mut stream = connector.connect(server_name(), client_io).await?;
            let mut byte = [0u8; 1];
            tokio::io::AsyncReadExt::read(&mut stream, &mut byte).await?;
            Ok::<_, std::io::Error>(())
        },
        async {
            let mut stream = acceptor.accept(server_io).await?;
            let connection = stream.get_ref().1;
            let peer = connection
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|leaf| verify::peer_identity(leaf));
            let alpn = connection.alpn_protocol().map(<[u8]>::to_vec);
            // A close_notify ends the client's read cleanly.
            tokio::io::AsyncWriteExt::shutdown(&mut stream).await?;
            Ok::<_, std::io::Error>((peer, alpn))
        }
    );
    let (peer, alpn) = server.as_ref().ok().cloned().unwrap_or_default();
    let server_ok = server.is_ok();
    (client.is_ok(), server_ok, peer, alpn)
}

#[tokio::test]
async fn mesh_peers_verify_each_other_by_spiffe_id() {
    let ca = Ca::new();
    let server = Configs::build(ca.identity(ORDERS, &[&ca])).expect("server configs");
    let client = Configs::build(ca.identity(FRONTEND, &[&ca])).expect("client configs");
    let orders = SpiffeId::parse(ORDERS).expect("id");

    let config = client.client(&orders, Alpn::H2).expect("client config");
    let (client_ok, server_ok, peer, alpn) = handshake(&server, config).await;
    assert!(client_ok && server_ok);
    assert_eq!(peer.map(|p| p.to_string()).as_deref(), Some(FRONTEND));
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

    // The same chain, but not the identity the endpoint was announced with.
    let frontend = SpiffeId::parse(FRONTEND).expect("id");
    let config = client
        .client(&frontend, Alpn::Http1)
        .expect("client config");
    let (client_ok, server_ok, _, _) = handshake(&server, config).await;
    assert!(!client_ok && !server_ok);
}

#[tokio::test]
async fn a_server_refuses_clients_without_a_mesh_certificate() {
    let ca = Ca::new();
    let other = Ca::new();
    let server = Configs::build(ca.identity(ORDERS, &[&ca])).expect("server configs");
    let orders = SpiffeId::parse(ORDERS).expect("id");

    // A client whose certificate comes from another CA (it trusts the mesh root).
    let stranger = Configs::build(other.identity(FRONTEND, &[&ca])).expect("configs");
    let config = stranger.client(&orders, Alpn::None).expect("client config");
    let (client_ok, server_ok, _, _) = handshake(&server, config).await;
    assert!(!client_ok && !server_ok);

    // A client with no certificate at all.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.clone()).expect("root");
    let verifier = verify::SpiffeServerVerifier::new(Arc::new(roots), &orders, provider.clone());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let (client_ok, server_ok, _, _) = handshake(&server, Arc::new(config)).await;
    assert!(!client_ok && !server_ok);
}

#[tokio::test]
async fn a_server_from_another_ca_is_refused_even_with_the_right_id() {
    let ca = Ca::new();
    let other = Ca::new();
    let impostor = Configs::build(other.identity(ORDERS, &[&ca])).expect("configs");
    let client = Configs::build(ca.identity(FRONTEND, &[&ca])).expect("configs");
    let orders = SpiffeId::parse(ORDERS).expect("id");
    let config = client.client(&orders, Alpn::Http1).expect("client config");
    let (client_ok, server_ok, _, _) = handshake(&impostor, config).await;
    assert!(!client_ok && !server_ok);
}
