//! Verifying a server proxy: its chain must end in a mesh root and its only URI SAN
//! must be the SPIFFE ID the endpoint was announced with. Mesh certificates carry no
//! DNS names, so the usual hostname check is replaced by the SPIFFE ID check.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use weft_proto::model::SpiffeId;
use x509_parser::extensions::GeneralName;

#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: String,
    provider: Arc<CryptoProvider>,
}

impl SpiffeServerVerifier {
    pub fn new(
        roots: Arc<RootCertStore>,
        expected: &SpiffeId,
        provider: Arc<CryptoProvider>,
    ) -> SpiffeServerVerifier {
        SpiffeServerVerifier {
            roots,
            expected: expected.to_string(),
            provider,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        match uri_sans(end_entity).as_deref() {
            Some([only]) if *only == self.expected => Ok(ServerCertVerified::assertion()),
            _ => Err(Error::InvalidCertificate(CertificateError::NotValidForName)),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // The configs allow TLS 1.3 only; a 1.2 handshake never gets here.
        Err(Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The URI SANs of a DER certificate; `None` when it does not parse.
pub fn uri_sans(der: &[u8]) -> Option<Vec<String>> {
    let (_, parsed) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = parsed.subject_alternative_name().ok().flatten();
    Some(
        san.map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(uri) => Some((*uri).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default(),
    )
}

/// The SPIFFE ID of a verified peer leaf: its one URI SAN, when it parses.
pub fn peer_identity(leaf: &[u8]) -> Option<SpiffeId> {
    match uri_sans(leaf)?.as_slice() {
        [only] => SpiffeId::parse(only).ok(),
        _ => None,
    }
}
