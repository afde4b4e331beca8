//! The test cluster's certificates: one CA that signs the API server's serving
//! certificate and every client certificate, and the service-account signing key.
//! All written as PEM files into the cluster's directory, as the binaries take files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Every file of the cluster's PKI.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The cluster CA (`ca.crt`), which pods also get as `kube-root-ca.crt`.
    pub ca_cert: PathBuf,
    pub ca_pem: String,
    pub apiserver: CertFiles,
    /// `CN=admin, O=system:masters`: the tests' and kubectl's identity.
    pub admin: CertFiles,
    /// `CN=system:kube-controller-manager`, which RBAC's bootstrap policy knows.
    pub controller_manager: CertFiles,
    /// The service-account signing key (ECDSA P-256, PKCS#8) and its public half.
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
}

impl Pki {
    pub fn generate(dir: &Path) -> Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let write = |name: &str, text: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
            Ok(path)
        };

        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name = name("weft-test-cluster-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = ca_params.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(ca_params, &ca_key);

        let leaf = |file: &str, cn: &str, org: Option<&str>, server: bool| -> Result<CertFiles> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name = name(cn, org);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            if server {
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                params.subject_alt_names = vec![
                    SanType::IpAddress([127, 0, 0, 1].into()),
                    SanType::DnsName("localhost".try_into()?),
                    SanType::DnsName("kubernetes".try_into()?),
                    SanType::DnsName("kubernetes.default".try_into()?),
                    SanType::DnsName("kubernetes.default.svc".try_into()?),
                    // The `kubernetes` Service's ClusterIP (first of 10.96.0.0/16).
                    SanType::IpAddress([10, 96, 0, 1].into()),
                ];
            } else {
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
            let cert = params.signed_by(&key, &issuer)?;
            Ok(CertFiles {
                cert: write(&format!("{file}.crt"), &cert.pem())?,
                key: write(&format!("{file}.key"), &key.serialize_pem())?,
            })
        };

        let sa = KeyPair::generate()?;
        Ok(Pki {
            ca_cert: write("ca.crt", &ca_pem)?,
            apiserver: leaf("apiserver", "kube-apiserver", None, true)?,
            admin: leaf("admin", "admin", Some("system:masters"), false)?,
            controller_manager: leaf(
                "controller-manager",
                "system:kube-controller-manager",
                None,
                false,
            )?,
            sa_key: write("sa.key", &sa.serialize_pem())?,
            sa_pub: write("sa.pub", &sa.public_key_pem())?,
            ca_pem,
        })
    }
}

fn name(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(org) = org {
        dn.push(DnType::OrganizationName, org);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

/// A kubeconfig for `server` with a client certificate, as kubectl and kube-rs read it.
pub fn kubeconfig_with_cert(server: &str, ca: &Path, client: &CertFiles, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: weft-test\n  cluster:\n    \
         server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    \
         client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: weft-test\n  \
         context:\n    cluster: weft-test\n    user: {user}\ncurrent-context: weft-test\n",
        ca = ca.display(),
        cert = client.cert.display(),
        key = client.key.display(),
    )
}

/// A kubeconfig that authenticates with a bearer token read from `token_file` (re-read
/// by clients as it is rotated), as a pod's in-cluster config does.
pub fn kubeconfig_with_token_file(server: &str, ca: &Path, token_file: &Path) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: in-cluster\n  cluster:\n    \
         server: {server}\n    certificate-authority: {ca}\nusers:\n- name: pod\n  user:\n    \
         tokenFile: {token}\ncontexts:\n- name: in-cluster\n  context:\n    cluster: in-cluster\n    \
         user: pod\ncurrent-context: in-cluster\n",
        ca = ca.display(),
        token = token_file.display(),
    )
}
