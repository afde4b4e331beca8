//! Mesh identity values: trust domains, SPIFFE IDs and the trust bundle.
//!
//! A workload's identity is `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`
//! (the form Istio uses), carried as the only URI SAN of its certificate.

use std::fmt;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::{validate_label, Invalid, ResourceName};
use crate::v1;

/// The resource name of the one trust bundle the control plane publishes.
pub const TRUST_BUNDLE_NAMESPACE: &str = "weft-system";
pub const TRUST_BUNDLE_NAME: &str = "trust-bundle";

/// A SPIFFE trust domain: lowercase letters, digits, `.`, `-` and `_` (SPIFFE ID spec,
/// section 2.1), at most 255 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    pub fn new(text: &str) -> Result<TrustDomain, Invalid> {
        let valid = !text.is_empty()
            && text.len() <= 255
            && text.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
            });
        if !valid {
            return Err(Invalid::new(
                "trust_domain",
                format!(
                    "{text:?} is not a trust domain (lowercase letters, digits, '.', '-', '_')"
                ),
            ));
        }
        Ok(TrustDomain(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    pub trust_domain: TrustDomain,
    pub namespace: String,
    pub service_account: String,
}

impl SpiffeId {
    pub fn new(
        trust_domain: TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<SpiffeId, Invalid> {
        validate_label("namespace", namespace)?;
        validate_label("service_account", service_account)?;
        Ok(SpiffeId {
            trust_domain,
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }

    /// Parses exactly the form this mesh issues; any other SPIFFE path is refused,
    /// so that a certificate's identity always names a namespace and service account.
    pub fn parse(text: &str) -> Result<SpiffeId, Invalid> {
        let invalid = |reason: &str| Invalid::new("spiffe_id", format!("{text:?}: {reason}"));
        let rest = text
            .strip_prefix("spiffe://")
            .ok_or_else(|| invalid("does not start with spiffe://"))?;
        let (domain, path) = rest.split_once('/').ok_or_else(|| invalid("has no path"))?;
        let trust_domain = TrustDomain::new(domain).map_err(|e| invalid(&e.reason))?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["ns", namespace, "sa", service_account] => {
                SpiffeId::new(trust_domain, namespace, service_account)
                    .map_err(|e| invalid(&e.to_string()))
            }
            _ => Err(invalid(
                "the path is not /ns/<namespace>/sa/<service-account>",
            )),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// The roots of a trust domain, as served to proxies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    pub name: ResourceName,
    pub trust_domain: TrustDomain,
    /// The PEM text of each root, as published.
    pub roots_pem: Vec<String>,
    /// The same roots, DER, in the same order: what a TLS library takes.
    pub roots: Vec<CertificateDer<'static>>,
}

impl TryFrom<&v1::TrustBundle> for TrustBundle {
    type Error = Invalid;

    fn try_from(msg: &v1::TrustBundle) -> Result<Self, Invalid> {
        let name = ResourceName::new(&msg.namespace, &msg.name)?;
        let trust_domain = TrustDomain::new(&msg.trust_domain)?;
        if msg.roots.is_empty() {
            return Err(Invalid::new("roots", "at least one root is needed"));
        }
        let mut roots = Vec::with_capacity(msg.roots.len());
        for (i, pem) in msg.roots.iter().enumerate() {
            // One certificate per entry: a bundle entry that hides a second certificate
            // would be trusted without being listed.
            let mut certificates = CertificateDer::pem_slice_iter(pem.as_bytes());
            let root = match (certificates.next(), certificates.next()) {
                (Some(Ok(root)), None) => root,
                _ => {
                    return Err(Invalid::new(
                        format!("roots[{i}]"),
                        "is not exactly one PEM certificate",
                    ))
                }
            };
            roots.push(root);
        }
        Ok(TrustBundle {
            name,
            trust_domain,
            roots_pem: msg.roots.clone(),
            roots,
        })
    }
}

impl TrustBundle {
    pub fn to_proto(&self) -> v1::TrustBundle {
        v1::TrustBundle {
            namespace: self.name.namespace.clone(),
            name: self.name.name.clone(),
            trust_domain: self.trust_domain.to_string(),
            roots: self.roots_pem.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_format_and_parse_back() {
        let id = SpiffeId::new(
            TrustDomain::new("cluster.local").expect("domain"),
            "shop",
            "orders",
        )
        .expect("id");
        let text = id.to_string();
        assert_eq!(text, "spiffe://cluster.local/ns/shop/sa/orders");
        assert_eq!(SpiffeId::parse(&text), Ok(id));
    }

    #[test]
    fn malformed_spiffe_ids_are_refused() {
        for text in [
            "https://cluster.local/ns/shop/sa/orders",
            "spiffe://cluster.local",
            "spiffe://Cluster.Local/ns/shop/sa/orders",
            "spiffe://cluster.local/ns/shop",
            "spiffe://cluster.local/ns/shop/sa/orders/extra",
            "spiffe://cluster.local/ns/Shop/sa/orders",
            "spiffe://cluster.local/sa/orders/ns/shop",
            "spiffe:///ns/shop/sa/orders",
        ] {
            assert!(SpiffeId::parse(text).is_err(), "{text} was accepted");
        }
    }

    #[test]
    fn a_bundle_needs_one_certificate_per_root() {
        let message = v1::TrustBundle {
            namespace: TRUST_BUNDLE_NAMESPACE.into(),
            name: TRUST_BUNDLE_NAME.into(),
            trust_domain: "cluster.local".into(),
            roots: vec!["not pem".into()],
        };
        let err = TrustBundle::try_from(&message).expect_err("invalid");
        assert_eq!(err.field, "roots[0]");
        let empty = v1::TrustBundle {
            roots: Vec::new(),
            ..message
        };
        assert_eq!(
            TrustBundle::try_from(&empty).expect_err("invalid").field,
            "roots"
        );
    }
}
