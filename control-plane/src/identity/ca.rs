//! The certificate authority: its roots, the key that signs leaves, and rotation.
//!
//! Two sources: generated at first start (ECDSA P-256, kept in the store's secrets so
//! a restart keeps the same roots), or operator files (`--ca-cert`, `--ca-key`,
//! optional `--ca-chain` up to the root), which are read at start and never stored.
//! The CA key is held in memory inside rcgen's `KeyPair`, whose `Debug` elides it;
//! nothing here derives `Debug` over key material, and errors name files, never
//! their contents.
//!
//! The roots are published as the `weft-system/trust-bundle` resource, rewritten at
//! every start (so a crash between a rotation's two writes heals) and at every
//! rotation step, so proxies learn of a new root over their discovery stream.
//!
//! Rotation of a generated CA, in two steps:
//! 1. `rotate`: a new root is made; the bundle lists old and new; new leaves are
//!    signed by the new root. Leaves of the old root keep verifying.
//! 2. `finish_rotation`, once every proxy has renewed (at most one `--cert-ttl`
//!    later): the bundle keeps only the new root.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKey, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::Mutex;
use weft_proto::model::{SpiffeId, TrustDomain, TRUST_BUNDLE_NAME, TRUST_BUNDLE_NAMESPACE};
use weft_proto::resource::Kind;
use weft_proto::v1;

use super::token::hex;
use crate::store::{Store, StoreError, Write};

/// The store secret holding a generated CA.
const SECRET_KEY: &str = "ca";
/// Generated roots outlive any leaf by far; rotation, not expiry, replaces them.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Leaves start a little in the past so a peer whose clock is behind accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Where the CA comes from.
#[derive(Debug, Clone)]
pub struct CaSource {
    pub trust_domain: TrustDomain,
    pub cert_ttl: Duration,
    /// Operator files; `None` for a generated CA.
    pub files: Option<CaFiles>,
}

#[derive(Debug, Clone)]
pub struct CaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub chain: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored CA is unreadable: {0}")]
    Corrupt(String),
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("{0}")]
    Precondition(String),
}

/// A generated CA as stored. No `Debug`: it holds the key.
#[derive(Clone, Serialize, Deserialize)]
struct StoredCa {
    signing_cert: String,
    signing_key: String,
    /// PEM roots of the bundle; the signing root is the last.
    roots: Vec<String>,
}

/// What signs, and what is trusted, at one moment. Swapped whole on rotation.
struct Signer {
    issuer: Issuer<'static, KeyPair>,
    /// Certificates between a leaf and its root (the signing certificate when it is an
    /// intermediate, then the rest of the operator's chain); empty for a root signer.
    intermediates: Vec<CertificateDer<'static>>,
    roots_pem: Vec<String>,
    roots: Vec<CertificateDer<'static>>,
    /// The root new leaves chain to.
    signing_root: CertificateDer<'static>,
    /// Present for a generated CA: what rotation starts from.
    stored: Option<StoredCa>,
}

/// A freshly signed leaf.
pub struct Issued {
    pub chain: Vec<CertificateDer<'static>>,
    pub roots_pem: Vec<String>,
    pub not_after: i64,
    pub serial: String,
}

pub struct Ca {
    trust_domain: TrustDomain,
    cert_ttl: Duration,
    store: Arc<dyn Store>,
    // A std RwLock: signing holds it for a clone of the Arc; never across an await.
    signer: RwLock<Arc<Signer>>,
    // Serializes rotation steps; a tokio Mutex because it is held across store writes.
    rotation: Mutex<()>,
}

impl Ca {
    /// Loads or creates the CA, and publishes its trust bundle.
    pub async fn open(source: CaSource, store: Arc<dyn Store>) -> Result<Ca, CaError> {
        let signer = match &source.files {
            Some(files) => from_files(files)?,
            None => {
                let fresh = serde_json::to_vec(&new_root(&source.trust_domain)?)
                    .map_err(|e| CaError::Corrupt(e.to_string()))?;
                let stored = store.create_secret(SECRET_KEY, fresh).await?;
                let stored: StoredCa = serde_json::from_slice(&stored)
                    .map_err(|e| CaError::Corrupt(format!("decoding: {e}")))?;
                from_stored(stored)?
            }
        };
        let ca = Ca {
            trust_domain: source.trust_domain,
            cert_ttl: source.cert_ttl,
            store,
            signer: RwLock::new(Arc::new(signer)),
            rotation: Mutex::new(()),
        };
        ca.publish().await?;
        Ok(ca)
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    fn current(&self) -> Arc<Signer> {
        match self.signer.read() {
            Ok(signer) => signer.clone(),
            // A panic while swapping cannot leave a half-written Arc; keep serving.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, signer: Signer) {
        let signer = Arc::new(signer);
        match self.signer.write() {
            Ok(mut slot) => *slot = signer,
            Err(poisoned) => *poisoned.into_inner() = signer,
        }
    }

    /// Signs a leaf for `id` over `public_key`: the SPIFFE ID as its only SAN, client
    /// and server auth, `--cert-ttl` long.
    pub fn sign(&self, public_key: &PublicKey, id: &SpiffeId) -> Result<Issued, CaError> {
        let uri = id
            .to_string()
            .try_into()
            .map_err(|e: rcgen::Error| CaError::Sign(e.to_string()))?;
        self.leaf(public_key, vec![SanType::URI(uri)])
    }

    /// Signs a serving certificate for the control plane's own HTTPS endpoints (the
    /// admission webhook): DNS names and IP addresses as SANs, `--cert-ttl` long.
    pub fn sign_server(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        names: &[String],
    ) -> Result<Issued, CaError> {
        let mut sans = Vec::new();
        for name in names {
            sans.push(match name.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    name.clone()
                        .try_into()
                        .map_err(|e: rcgen::Error| CaError::Sign(format!("{name}: {e}")))?,
                ),
            });
        }
        self.leaf(public_key, sans)
    }

    fn leaf(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        sans: Vec<SanType>,
    ) -> Result<Issued, CaError> {
        let signer = self.current();
        let now = OffsetDateTime::now_utc();
        let not_after = now + self.cert_ttl;
        let mut params = CertificateParams::default();
        // An empty subject: the identity is in the SANs (rcgen then marks them
        // critical, as RFC 5280 requires).
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - CLOCK_SKEW;
        params.not_after = not_after;
        let serial = random_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let leaf = params
            .signed_by(public_key, &signer.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let mut chain = vec![leaf.der().clone()];
        chain.extend(signer.intermediates.iter().cloned());
        Ok(Issued {
            chain,
            roots_pem: signer.roots_pem.clone(),
            not_after: not_after.unix_timestamp(),
            serial: hex(&serial),
        })
    }

    pub fn bundle(&self) -> v1::TrustBundle {
        bundle_message(&self.trust_domain, &self.current().roots_pem)
    }

    pub fn status(&self) -> v1::CaStatus {
        let signer = self.current();
        v1::CaStatus {
            trust_domain: self.trust_domain.to_string(),
            roots: signer
                .roots
                .iter()
                .map(|root| describe(root, *root == signer.signing_root))
                .collect(),
            external: signer.stored.is_none(),
        }
    }

    /// Starts a rotation: a new root signs from now on; both are trusted.
    pub async fn rotate(&self) -> Result<v1::CaStatus, CaError> {
        let _guard = self.rotation.lock().await;
        let current = self.current();
        let stored = self.generated(&current)?;
        if stored.roots.len() > 1 {
            return Err(CaError::Precondition(
                "a rotation is already under way; run `weftctl ca finish-rotation` first"
                    .to_owned(),
            ));
        }
        let mut next = new_root(&self.trust_domain)?;
        let mut roots = stored.roots.clone();
        roots.append(&mut next.roots);
        next.roots = roots;
        self.commit(next).await?;
        tracing::info!(
            roots = 2,
            "CA rotation started: new leaves are signed by the new root"
        );
        Ok(self.status())
    }

    /// Ends a rotation: only the signing root stays trusted.
    pub async fn finish_rotation(&self) -> Result<v1::CaStatus, CaError> {
        let _guard = self.rotation.lock().await;
        let current = self.current();
        let stored = self.generated(&current)?;
        if stored.roots.len() < 2 {
            return Err(CaError::Precondition(
                "no rotation is under way; start one with `weftctl ca rotate`".to_owned(),
            ));
        }
        let mut next = stored.clone();
        next.roots = next.roots.split_off(next.roots.len() - 1);
        self.commit(next).await?;
        tracing::info!("CA rotation finished: the old root is no longer trusted");
        Ok(self.status())
    }

    fn generated<'a>(&self, signer: &'a Signer) -> Result<&'a StoredCa, CaError> {
        signer.stored.as_ref().ok_or_else(|| {
            CaError::Precondition(
                "the CA comes from --ca-cert/--ca-key; rotate it by replacing those files"
                    .to_owned(),
            )
        })
    }

    /// Stores the new state first, then serves and publishes it: a crash in between
    /// is healed by the publish at the next start.
    async fn commit(&self, next: StoredCa) -> Result<(), CaError> {
        let signer = from_stored(next.clone())?;
        let value = serde_json::to_vec(&next).map_err(|e| CaError::Corrupt(e.to_string()))?;
        self.store.put_secret(SECRET_KEY, value).await?;
        self.replace(signer);
        self.publish().await
    }

    async fn publish(&self) -> Result<(), CaError> {
        let body = prost::Message::encode_to_vec(&self.bundle());
        self.store
            .apply(vec![Write {
                kind: Kind::TrustBundle,
                name: format!("{TRUST_BUNDLE_NAMESPACE}/{TRUST_BUNDLE_NAME}"),
                body,
            }])
            .await?;
        Ok(())
    }
}

pub fn bundle_message(trust_domain: &TrustDomain, roots_pem: &[String]) -> v1::TrustBundle {
    v1::TrustBundle {
        namespace: TRUST_BUNDLE_NAMESPACE.to_owned(),
        name: TRUST_BUNDLE_NAME.to_owned(),
        trust_domain: trust_domain.to_string(),
        roots: roots_pem.to_vec(),
    }
}

fn describe(root: &CertificateDer<'_>, signing: bool) -> v1::CaRoot {
    let (subject, not_after) = match x509_parser::parse_x509_certificate(root) {
        Ok((_, cert)) => (
            cert.subject().to_string(),
            cert.validity().not_after.timestamp(),
        ),
        Err(_) => (String::new(), 0),
    };
    v1::CaRoot {
        fingerprint: fingerprint(root),
        subject,
        not_after,
        signing,
    }
}

/// SHA-256 of a DER certificate, lowercase hex (what `openssl x509 -fingerprint
/// -sha256` prints, without the colons).
pub fn fingerprint(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

/// 16 random bytes with the top bit clear: positive, and unique in practice.
fn random_serial() -> [u8; 16] {
    let mut serial = [0u8; 16];
    rand::rng().fill_bytes(&mut serial);
    serial[0] &= 0x7f;
    serial
}

fn new_root(trust_domain: &TrustDomain) -> Result<StoredCa, CaError> {
    let failed = |e: rcgen::Error| CaError::Sign(format!("making a root: {e}"));
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(failed)?;
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "weft");
    // A distinct name per root, so that the old and new roots of a rotation never
    // look alike to a path builder.
    let mut tag = [0u8; 4];
    rand::rng().fill_bytes(&mut tag);
    name.push(
        DnType::CommonName,
        format!("weft root CA {trust_domain} {}", hex(&tag)),
    );
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + ROOT_LIFETIME;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    let cert = params.self_signed(&key).map_err(failed)?;
    Ok(StoredCa {
        signing_cert: cert.pem(),
        signing_key: key.serialize_pem(),
        roots: vec![cert.pem()],
    })
}

fn from_stored(stored: StoredCa) -> Result<Signer, CaError> {
    let corrupt = |what: &str| CaError::Corrupt(what.to_owned());
    let key = KeyPair::from_pem(&stored.signing_key).map_err(|_| corrupt("the signing key"))?;
    let issuer = Issuer::from_ca_cert_pem(&stored.signing_cert, key)
        .map_err(|_| corrupt("the signing certificate"))?;
    let signing_root = CertificateDer::from_pem_slice(stored.signing_cert.as_bytes())
        .map_err(|_| corrupt("the signing certificate"))?;
    let roots = stored
        .roots
        .iter()
        .map(|pem| CertificateDer::from_pem_slice(pem.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| corrupt("a root"))?;
    Ok(Signer {
        issuer,
        intermediates: Vec::new(),
        roots_pem: stored.roots.clone(),
        roots,
        signing_root,
        stored: Some(stored),
    })
}

fn from_files(files: &CaFiles) -> Result<Signer, CaError> {
    let read = |flag: &str, path: &PathBuf| {
        std::fs::read_to_string(path)
            .map_err(|e| CaError::Config(format!("{flag} {}: {e}", path.display())))
    };
    let cert_pem = read("--ca-cert", &files.cert)?;
    let key_pem = read("--ca-key", &files.key)?;
    let chain_pem = match &files.chain {
        Some(path) => Some(read("--ca-chain", path)?),
        None => None,
    };
    // Errors below name the flag and file only: the key's text must never reach a log.
    let key = KeyPair::from_pem(&key_pem).map_err(|_| {
        CaError::Config(format!(
            "--ca-key {}: not a PEM private key this build can use (PKCS#8 ECDSA P-256/P-384, Ed25519 or RSA)",
            files.key.display()
        ))
    })?;
    let certs = |flag: &str, path: &PathBuf, text: &str| {
        CertificateDer::pem_slice_iter(text.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|certs| !certs.is_empty())
            .ok_or_else(|| {
                CaError::Config(format!("{flag} {}: no PEM certificate", path.display()))
            })
    };
    let signing = certs("--ca-cert", &files.cert, &cert_pem)?
        .into_iter()
        .next()
        .ok_or_else(|| CaError::Config("--ca-cert: no certificate".to_owned()))?;
    let chain = match (&files.chain, &chain_pem) {
        (Some(path), Some(text)) => certs("--ca-chain", path, text)?,
        _ => Vec::new(),
    };
    let parsed = x509_parser::parse_x509_certificate(&signing)
        .map_err(|_| {
            CaError::Config(format!(
                "--ca-cert {}: not an X.509 certificate",
                files.cert.display()
            ))
        })?
        .1;
    if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(CaError::Config(format!(
            "--ca-key {} is not the key of --ca-cert {}",
            files.key.display(),
            files.cert.display()
        )));
    }
    if !parsed.is_ca() {
        return Err(CaError::Config(format!(
            "--ca-cert {}: not a CA certificate (basicConstraints CA:TRUE is needed)",
            files.cert.display()
        )));
    }
    let self_signed = parsed.subject() == parsed.issuer();
    // The root is the last of the chain, or the signing certificate itself.
    let (intermediates, root) = if self_signed && chain.is_empty() {
        (Vec::new(), signing.clone())
    } else {
        let Some((root, between)) = chain.split_last() else {
            return Err(CaError::Config(format!(
                "--ca-cert {} is an intermediate: give --ca-chain with the certificates up to the root",
                files.cert.display()
            )));
        };
        let mut intermediates = vec![signing.clone()];
        intermediates.extend(between.iter().cloned());
        (intermediates, root.clone())
    };
    let issuer = Issuer::from_ca_cert_der(&signing, key).map_err(|_| {
        CaError::Config(format!(
            "--ca-cert {}: not usable as an issuer",
            files.cert.display()
        ))
    })?;
    let root_pem = pem::encode(&pem::Pem::new("CERTIFICATE", root.to_vec()));
    Ok(Signer {
        issuer,
        intermediates,
        roots_pem: vec![root_pem],
        roots: vec![root.clone()],
        signing_root: root,
        stored: None,
    })
}
