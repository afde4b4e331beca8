//! The checks a CSR must pass before the CA signs anything for it.
//!
//! Only the CSR's public key is carried into the certificate; everything else the CA
//! writes itself. The request is still held to the identity the token allows, so that
//! a proxy asking for more (another SPIFFE ID, a DNS name, a CA bit) is told plainly
//! rather than silently given less.

use rcgen::{CertificateSigningRequestParams, IsCa, PublicKey, SanType};
use rustls_pki_types::CertificateSigningRequestDer;
use weft_proto::model::SpiffeId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// Not a PKCS#10 request, an unsupported key or extension, or a bad signature.
    #[error("malformed CSR: {0}")]
    Malformed(String),
    /// Well-formed, but for something the token does not allow.
    #[error("{0}")]
    NotAllowed(String),
}

/// A CSR that passed: its public key, to be certified for the expected identity.
pub struct CheckedCsr {
    pub public_key: PublicKey,
}

/// Parses `der`, verifies its signature, and checks that it asks for exactly
/// `expected` (one URI SAN) and nothing else.
pub fn check(der: &[u8], expected: &SpiffeId) -> Result<CheckedCsr, CsrError> {
    if der.is_empty() {
        return Err(CsrError::Malformed("empty".to_owned()));
    }
    let request =
        CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(der))
            .map_err(|e| CsrError::Malformed(e.to_string()))?;
    let params = &request.params;
    if !matches!(params.is_ca, IsCa::NoCa | IsCa::ExplicitNoCa) {
        return Err(CsrError::NotAllowed(
            "the CSR asks for a CA certificate".to_owned(),
        ));
    }
    let expected_uri = expected.to_string();
    match params.subject_alt_names.as_slice() {
        [SanType::URI(uri)] if uri.as_str() == expected_uri => {}
        [SanType::URI(uri)] => {
            return Err(CsrError::NotAllowed(format!(
                "the CSR asks for {:?}; the token allows only {expected_uri}",
                uri.as_str()
            )))
        }
        [] => {
            return Err(CsrError::NotAllowed(format!(
                "the CSR names no identity; it must have the URI SAN {expected_uri}"
            )))
        }
        other => {
            return Err(CsrError::NotAllowed(format!(
                "the CSR must have exactly one SAN, the URI {expected_uri}; it has {}",
                other.len()
            )))
        }
    }
    Ok(CheckedCsr {
        public_key: request.public_key,
    })
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256};
    use weft_proto::model::TrustDomain;

    use super::*;

    fn id(namespace: &str, service_account: &str) -> SpiffeId {
        let domain = TrustDomain::new("cluster.local").expect("domain");
        SpiffeId::new(domain, namespace, service_account).expect("id")
    }

    fn csr(sans: Vec<SanType>, is_ca: IsCa) -> Vec<u8> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.is_ca = is_ca;
        params.serialize_request(&key).expect("csr").der().to_vec()
    }

    fn uri(text: &str) -> SanType {
        SanType::URI(text.try_into().expect("ia5"))
    }

    #[test]
    fn the_named_identity_passes() {
        let der = csr(
            vec![uri("spiffe://cluster.local/ns/shop/sa/orders")],
            IsCa::NoCa,
        );
        assert!(check(&der, &id("shop", "orders")).is_ok());
    }

    #[test]
    fn another_identity_or_extra_names_are_not_allowed() {
        let expected = id("shop", "orders");
        let cases = [
            csr(
                vec![uri("spiffe://cluster.local/ns/shop/sa/admin")],
                IsCa::NoCa,
            ),
            csr(
                vec![uri("spiffe://evil.example/ns/shop/sa/orders")],
                IsCa::NoCa,
            ),
            csr(Vec::new(), IsCa::NoCa),
            csr(
                vec![
                    uri("spiffe://cluster.local/ns/shop/sa/orders"),
                    SanType::DnsName("orders.shop".try_into().expect("ia5")),
                ],
                IsCa::NoCa,
            ),
            csr(
                vec![uri("spiffe://cluster.local/ns/shop/sa/orders")],
                IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
            ),
        ];
        for der in cases {
            assert!(
                matches!(check(&der, &expected), Err(CsrError::NotAllowed(_))),
                "{:?}",
                check(&der, &expected).err()
            );
        }
    }

    #[test]
    fn garbage_and_a_broken_signature_are_malformed() {
        let expected = id("shop", "orders");
        assert!(matches!(check(b"", &expected), Err(CsrError::Malformed(_))));
        assert!(matches!(
            check(b"not a csr", &expected),
            Err(CsrError::Malformed(_))
        ));
        let mut der = csr(
            vec![uri("spiffe://cluster.local/ns/shop/sa/orders")],
            IsCa::NoCa,
        );
        // The signature is the last field: flipping its last byte keeps the structure.
        if let Some(last) = der.last_mut() {
            *last ^= 0x01;
        }
        assert!(matches!(
            check(&der, &expected),
            Err(CsrError::Malformed(_))
        ));
    }
}
