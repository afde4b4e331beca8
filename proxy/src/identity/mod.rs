//! The proxy's identity: its certificate, key and the roots it trusts, for mTLS.
//!
//! The [`manager`] task (control runtime) makes a key in memory, has the control
//! plane certify it, and renews it; the trust bundle arrives over discovery. Both
//! feed [`IdentityState`], which publishes an immutable [`Identity`] on a `watch`
//! channel: the data path subscribes and builds its rustls configs from each new
//! value (a renewal or a root rotation), never blocking on the manager.
//!
//! The key exists only in this process's memory; it is never logged, dumped or sent.

pub mod manager;
pub mod saved;

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use weft_proto::model::{SpiffeId, TrustBundle};

/// A certified identity with the roots to verify peers by. Swapped whole.
pub struct Identity {
    pub spiffe_id: SpiffeId,
    /// DER, the leaf first, then any intermediates.
    pub cert_chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
    /// The trust bundle's roots (DER): what peers' chains must end in.
    pub roots: Vec<CertificateDer<'static>>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The leaf's serial number, lowercase hex.
    pub serial: String,
}

impl Identity {
    /// The private key, for a rustls `ServerConfig`/`ClientConfig`
    /// (`with_single_cert(cert_chain, key)` / `with_client_auth_cert`).
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// An identity made outside the manager, for tests of the TLS configs.
    #[cfg(test)]
    pub(crate) fn for_tests(
        spiffe_id: SpiffeId,
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivatePkcs8KeyDer<'static>,
        roots: Vec<CertificateDer<'static>>,
    ) -> Identity {
        Identity {
            spiffe_id,
            cert_chain,
            key,
            roots,
            not_before: SystemTime::UNIX_EPOCH,
            not_after: SystemTime::UNIX_EPOCH,
            serial: String::new(),
        }
    }

    /// Whether the certificate is still valid at `now`.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("spiffe_id", &self.spiffe_id.to_string())
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("roots", &self.roots.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Shared between the manager, discovery (trust bundles), admin and the data path.
pub struct IdentityState {
    /// True when a token is configured: readiness then waits for a certificate.
    pub enabled: bool,
    identity: watch::Sender<Option<Arc<Identity>>>,
    bundle: watch::Sender<Option<Arc<TrustBundle>>>,
    // A std Mutex: held for an assignment or a clone, never across an await.
    last_error: Mutex<Option<String>>,
}

impl IdentityState {
    pub fn new(enabled: bool) -> IdentityState {
        IdentityState {
            enabled,
            identity: watch::channel(None).0,
            bundle: watch::channel(None).0,
            last_error: Mutex::new(None),
        }
    }

    /// The current identity, if certified.
    pub fn current(&self) -> Option<Arc<Identity>> {
        self.identity.borrow().clone()
    }

    /// For the data path: wakes on every renewal and root change.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Identity>>> {
        self.identity.subscribe()
    }

    pub fn trust_bundle(&self) -> Option<Arc<TrustBundle>> {
        self.bundle.borrow().clone()
    }

    /// A trust bundle from discovery or a Certify answer; an identical one is ignored.
    pub fn set_trust_bundle(&self, bundle: Arc<TrustBundle>) {
        self.bundle.send_if_modified(|current| {
            let changed = current.as_deref() != Some(&*bundle);
            if changed {
                *current = Some(bundle);
            }
            changed
        });
    }

    fn bundle_changes(&self) -> watch::Receiver<Option<Arc<TrustBundle>>> {
        self.bundle.subscribe()
    }

    fn publish(&self, identity: Identity) {
        self.identity.send_replace(Some(Arc::new(identity)));
    }

    fn set_error(&self, error: Option<String>) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = error;
        }
    }

    /// What `/config_dump` shows: public facts only, never the key.
    pub fn dump(&self) -> IdentityDump {
        let identity = self.current();
        let bundle = self.trust_bundle();
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        IdentityDump {
            enabled: self.enabled,
            spiffe_id: identity.as_ref().map(|i| i.spiffe_id.to_string()),
            serial: identity.as_ref().map(|i| i.serial.clone()),
            not_before: identity.as_ref().map(|i| unix(i.not_before)),
            not_after: identity.as_ref().map(|i| unix(i.not_after)),
            certificate_chain: identity
                .as_ref()
                .map(|i| {
                    i.cert_chain
                        .iter()
                        .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec())))
                        .collect()
                })
                .unwrap_or_default(),
            trust_domain: bundle.as_ref().map(|b| b.trust_domain.to_string()),
            roots: identity
                .as_ref()
                .map(|i| i.roots.iter().map(|r| fingerprint(r)).collect())
                .unwrap_or_default(),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IdentityDump {
    pub enabled: bool,
    pub spiffe_id: Option<String>,
    pub serial: Option<String>,
    /// Seconds since the Unix epoch.
    pub not_before: Option<u64>,
    pub not_after: Option<u64>,
    /// PEM, the leaf first: public, and what an operator feeds to `openssl verify`.
    pub certificate_chain: Vec<String>,
    pub trust_domain: Option<String>,
    /// SHA-256 fingerprints (lowercase hex) of the roots in use.
    pub roots: Vec<String>,
    pub last_error: Option<String>,
}

/// SHA-256 of a DER certificate, lowercase hex, as `weftctl ca status` prints it.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
