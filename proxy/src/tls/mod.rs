//! mTLS between proxies: the rustls configs built from the proxy's identity.
//!
//! [`maintain`] rebuilds [`Configs`] whenever the certificate manager publishes a new
//! identity (a renewal or a root change) and swaps them in whole; a handshake loads
//! the current configs once, so it never sees a certificate with the wrong roots.
//! Only TLS 1.3 is offered, with ring as the provider (rcgen already brings it).
//!
//! The server side requires a client certificate chaining to the mesh roots; the
//! client side presents the proxy's certificate and accepts a server only when its
//! chain ends in a root and its SPIFFE ID is the endpoint's ([`verify`]).

pub mod verify;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::sync::watch;
use weft_proto::model::SpiffeId;

use crate::drain;
use crate::identity::Identity;

/// What a client offers by ALPN: the protocol it is about to speak, so the server
/// needs no sniffing inside TLS. Opaque TCP offers nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alpn {
    H2,
    Http1,
    None,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::H2 => vec![b"h2".to_vec()],
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::None => Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("building TLS configs: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("building the client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The configs of one identity. Client configs differ by the identity they expect
/// and the ALPN they offer, so they are made on first use and kept until the next
/// identity replaces the whole set.
pub struct Configs {
    pub identity: Arc<Identity>,
    pub server: Arc<ServerConfig>,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    // A std Mutex: held for a lookup or an insert, never across an await.
    clients: Mutex<HashMap<(SpiffeId, Alpn), Arc<ClientConfig>>>,
}

impl Configs {
    pub fn build(identity: Arc<Identity>) -> Result<Configs, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for root in &identity.roots {
            roots.add(root.clone())?;
        }
        let roots = Arc::new(roots);
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(identity.cert_chain.clone(), identity.key())?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Configs {
            identity,
            server: Arc::new(server),
            roots,
            provider,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// The client config that accepts only a server named `expected`.
    pub fn client(&self, expected: &SpiffeId, alpn: Alpn) -> Result<Arc<ClientConfig>, TlsError> {
        let key = (expected.clone(), alpn);
        if let Some(config) = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(config.clone());
        }
        let verifier =
            verify::SpiffeServerVerifier::new(self.roots.clone(), expected, self.provider.clone());
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(self.identity.cert_chain.clone(), self.identity.key())?;
        // Mesh certificates name no host; the server name is a placeholder.
        config.enable_sni = false;
        config.alpn_protocols = alpn.protocols();
        let config = Arc::new(config);
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, config.clone());
        Ok(config)
    }
}

/// The current configs, `None` while the proxy has no certificate.
#[derive(Default)]
pub struct Tls {
    current: ArcSwapOption<Configs>,
}

impl Tls {
    pub fn current(&self) -> Option<Arc<Configs>> {
        self.current.load_full()
    }

    /// Whether the proxy holds a certificate, without taking a reference to the
    /// configs (asked for every request to an mTLS peer).
    pub fn holds_certificate(&self) -> bool {
        self.current.load().is_some()
    }

    fn update(&self, identity: Option<Arc<Identity>>) {
        let Some(identity) = identity else {
            self.current.store(None);
            return;
        };
        match Configs::build(identity) {
            Ok(configs) => self.current.store(Some(Arc::new(configs))),
            // Keep the previous configs: they were valid, this identity is not usable.
            Err(e) => tracing::error!(error = %e, "cannot use the new certificate for TLS"),
        }
    }
}

/// Follows the certificate manager until the drain signal.
pub async fn maintain(
    tls: Arc<Tls>,
    mut identity: watch::Receiver<Option<Arc<Identity>>>,
    mut drain: drain::Watch,
) {
    loop {
        let current = identity.borrow_and_update().clone();
        tls.update(current);
        tokio::select! {
            changed = identity.changed() => if changed.is_err() { return },
            () = drain.signaled() => return,
        }
    }
}

/// The placeholder server name of every mesh handshake (SNI is off; the verifier
/// checks the SPIFFE ID instead).
pub fn server_name() -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into())
}
