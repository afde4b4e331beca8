//! The CA against the real store: issuing, rotation, operator files.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, IsCa,
    KeyPair, SanType, PKCS_ECDSA_P256_SHA256,
};
use weft_proto::model::{SpiffeId, TrustDomain};
use weft_proto::resource::Kind;
use weft_proto::v1;
use x509_parser::extensions::GeneralName;

use super::*;
use crate::store::{EmbeddedStore, Store};

fn domain() -> TrustDomain {
    TrustDomain::new("cluster.local").expect("domain")
}

fn source(files: Option<CaFiles>) -> CaSource {
    CaSource {
        trust_domain: domain(),
        cert_ttl: Duration::from_secs(3600),
        files,
    }
}

/// A proxy's side: a key and a CSR for `id`, parsed back as the CA sees it.
fn request(id: &SpiffeId) -> CertificateSigningRequestParams {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.to_string().try_into().expect("ia5"))];
    let csr = params.serialize_request(&key).expect("csr");
    CertificateSigningRequestParams::from_der(csr.der()).expect("parse")
}

fn roots_of(ca: &Ca) -> Vec<String> {
    ca.status()
        .roots
        .into_iter()
        .map(|r| r.fingerprint)
        .collect()
}

/// Checks the leaf's SAN, usage and that `root_der` signed it.
fn check_leaf(leaf_der: &[u8], root_der: &[u8], id: &SpiffeId) {
    let (_, leaf) = x509_parser::parse_x509_certificate(leaf_der).expect("leaf");
    let (_, root) = x509_parser::parse_x509_certificate(root_der).expect("root");
    leaf.verify_signature(Some(root.public_key()))
        .expect("signed by the root");
    let san = leaf
        .subject_alternative_name()
        .expect("san ext")
        .expect("san");
    let expected = id.to_string();
    assert!(matches!(
        san.value.general_names.as_slice(),
        [GeneralName::URI(uri)] if *uri == expected
    ));
    assert!(san.critical, "an empty subject needs a critical SAN");
    let eku = leaf.extended_key_usage().expect("eku ext").expect("eku");
    assert!(eku.value.server_auth && eku.value.client_auth);
    assert!(!leaf.is_ca());
}

fn pem_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("pem")
        .to_vec()
}

async fn stored_bundle(store: &Arc<dyn Store>) -> v1::TrustBundle {
    let record = store
        .get(Kind::TrustBundle, "weft-system/trust-bundle")
        .await
        .expect("get")
        .expect("published");
    v1::TrustBundle::decode(record.body.as_slice()).expect("decode")
}

#[tokio::test]
async fn a_generated_ca_issues_leaves_survives_restarts_and_rotates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
    let ca = Ca::open(source(None), store.clone()).await.expect("ca");
    let id = SpiffeId::new(domain(), "shop", "orders").expect("id");

    let issued = ca.sign(&request(&id).public_key, &id).expect("sign");
    assert_eq!(issued.chain.len(), 1, "a root signer adds no intermediates");
    let first_root = pem_der(&issued.roots_pem[0]);
    check_leaf(&issued.chain[0], &first_root, &id);
    assert_eq!(stored_bundle(&store).await.roots, issued.roots_pem);

    // A restart on the same store keeps the root.
    let before = roots_of(&ca);
    drop(ca);
    let ca = Ca::open(source(None), store.clone()).await.expect("reopen");
    assert_eq!(roots_of(&ca), before);

    // Rotation: both roots trusted, the new one signs.
    let status = ca.rotate().await.expect("rotate");
    assert_eq!(status.roots.len(), 2);
    assert!(!status.roots[0].signing && status.roots[1].signing);
    assert!(ca.rotate().await.is_err(), "one rotation at a time");
    let bundle = stored_bundle(&store).await;
    assert_eq!(bundle.roots.len(), 2);
    let issued = ca.sign(&request(&id).public_key, &id).expect("sign");
    check_leaf(&issued.chain[0], &pem_der(&bundle.roots[1]), &id);

    let status = ca.finish_rotation().await.expect("finish");
    assert_eq!(status.roots.len(), 1);
    assert_eq!(status.roots[0].fingerprint, before_new(&bundle));
    assert_eq!(
        stored_bundle(&store).await.roots,
        vec![bundle.roots[1].clone()]
    );
    assert!(ca.finish_rotation().await.is_err(), "nothing to finish");
}

fn before_new(bundle: &v1::TrustBundle) -> String {
    ca::fingerprint(&pem_der(&bundle.roots[1]))
}

#[tokio::test]
async fn operator_files_with_an_intermediate_sign_and_never_echo_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    // root -> intermediate, as an operator's PKI would hand them over.
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut root_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root = rcgen::CertifiedIssuer::self_signed(root_params, root_key).expect("root");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "intermediate");
    let intermediate = params.signed_by(&key, &root).expect("intermediate");
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("ca.pem"), intermediate.pem()).expect("write");
    std::fs::write(path("ca-key.pem"), key.serialize_pem()).expect("write");
    std::fs::write(path("chain.pem"), root.pem()).expect("write");

    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("data")).expect("open"));
    let files = CaFiles {
        cert: path("ca.pem"),
        key: path("ca-key.pem"),
        chain: Some(path("chain.pem")),
    };
    let ca = Ca::open(source(Some(files.clone())), store.clone())
        .await
        .expect("ca");
    let id = SpiffeId::new(domain(), "shop", "orders").expect("id");
    let issued = ca.sign(&request(&id).public_key, &id).expect("sign");
    assert_eq!(issued.chain.len(), 2, "leaf, then the intermediate");
    check_leaf(&issued.chain[0], intermediate.der(), &id);
    assert_eq!(ca.status().roots.len(), 1);
    assert!(ca.status().external);
    assert!(
        ca.rotate().await.is_err(),
        "operator CAs rotate by their files"
    );
    // The operator's key is not copied into the store.
    assert_eq!(store.get_secret("ca").await.expect("get"), None);

    // A key that is not the certificate's: the error names files, not contents.
    let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    std::fs::write(path("other-key.pem"), other.serialize_pem()).expect("write");
    let wrong = CaFiles {
        key: path("other-key.pem"),
        ..files.clone()
    };
    let message = match Ca::open(source(Some(wrong)), store.clone()).await {
        Ok(_) => panic!("a mismatched key was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains("is not the key of"), "{message}");
    let secret_body: String = other
        .serialize_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!message.contains(&secret_body[..40]));

    // An intermediate without its chain is refused with the reason.
    let no_chain = CaFiles {
        chain: None,
        ..files
    };
    let message = match Ca::open(source(Some(no_chain)), store).await {
        Ok(_) => panic!("an intermediate without a chain was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains("--ca-chain"), "{message}");
}

#[test]
fn durations_parse_with_units() {
    assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
    assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    for bad in ["", "3", "h", "0s", "3x", "-1s"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}
