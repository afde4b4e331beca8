//! The certificate manager: certify at start, renew at ~70% of the lifetime.
//!
//! Each round makes a fresh ECDSA P-256 key in memory, sends a CSR for
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>` with the join token
//! to `Identity.Certify`, and publishes the answer. The trust domain is the one of
//! the trust bundle (from discovery, before the first certificate) and then of the
//! certificate itself. A failed renewal keeps the still-valid certificate and retries
//! with jittered backoff; a new trust bundle republishes the identity with its roots.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tokio::time::Instant;
use weft_proto::model::{SpiffeId, TrustBundle, TrustDomain};
use weft_proto::v1;
use weft_proto::v1::identity_client::IdentityClient;
use x509_parser::extensions::GeneralName;

use super::Identity;
use crate::config::IdentityConfig;
use crate::discovery::{self, Backoff};
use crate::drain::Watch;
use crate::state::Shared;

/// Renew when this share of the lifetime has passed (Linkerd's choice, DESIGN.md 6).
const RENEW_AT: f64 = 0.7;
const FIRST_RETRY: Duration = Duration::from_millis(200);
const CERTIFY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error("{0}")]
    Token(String),
    #[error("making the key or CSR: {0}")]
    Csr(String),
    #[error(transparent)]
    Connect(#[from] discovery::DiscoveryError),
    #[error("Certify: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("Certify timed out after {0:?}")]
    Timeout(Duration),
    #[error("the control plane's answer is unusable: {0}")]
    Answer(String),
}

/// A certified key, before the roots are joined to it.
struct Certified {
    spiffe_id: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
    not_before: SystemTime,
    not_after: SystemTime,
    serial: String,
}

pub async fn run(shared: Arc<Shared>, mut drain: Watch) {
    let Some(config) = shared.config.identity.clone() else {
        return;
    };
    let state = &shared.identity;
    let resolver = discovery::resolver();
    let mut backoff = Backoff::new(FIRST_RETRY, shared.config.reconnect_max);
    let mut bundles = state.bundle_changes();
    let mut current = restore(&shared, &config);
    if let Some(certified) = &current {
        metrics::gauge!("weft_identity_cert_expiry_timestamp_seconds")
            .set(unix_seconds(certified.not_after));
        tracing::info!(
            spiffe_id = %certified.spiffe_id,
            serial = %certified.serial,
            "identity restored from the state directory; renewing it now"
        );
        republish(state, current.as_ref());
    }
    let mut renew_at = Instant::now();
    loop {
        // Before the first certificate the trust domain is unknown: wait for a bundle.
        let trust_domain = match (&current, state.trust_bundle()) {
            (Some(certified), _) => Some(certified.spiffe_id.trust_domain.clone()),
            (None, Some(bundle)) => Some(bundle.trust_domain.clone()),
            (None, None) => None,
        };
        tokio::select! {
            () = tokio::time::sleep_until(renew_at), if trust_domain.is_some() => {
                let Some(trust_domain) = trust_domain else { continue };
                match certify(&shared, &config, resolver.as_ref(), trust_domain).await {
                    Ok((certified, bundle)) => {
                        let lifetime = certified
                            .not_after
                            .duration_since(SystemTime::now())
                            .unwrap_or_default();
                        renew_at = Instant::now() + lifetime.mul_f64(RENEW_AT);
                        backoff.reset();
                        metrics::counter!("weft_identity_renewals_total", "result" => "success")
                            .increment(1);
                        metrics::gauge!("weft_identity_cert_expiry_timestamp_seconds")
                            .set(unix_seconds(certified.not_after));
                        tracing::info!(
                            spiffe_id = %certified.spiffe_id,
                            serial = %certified.serial,
                            renew_in = ?lifetime.mul_f64(RENEW_AT),
                            "certified"
                        );
                        state.set_error(None);
                        keep(&shared, &certified).await;
                        current = Some(certified);
                        // Roots from the answer are as fresh as any pushed bundle.
                        state.set_trust_bundle(Arc::new(bundle));
                        republish(state, current.as_ref());
                    }
                    Err(e) => {
                        metrics::counter!("weft_identity_renewals_total", "result" => "failure")
                            .increment(1);
                        let delay = backoff.next_delay();
                        let still_valid = current
                            .as_ref()
                            .is_some_and(|c| SystemTime::now() < c.not_after);
                        tracing::warn!(error = %e, retry_in = ?delay, still_valid, "certificate request failed; keeping the current certificate while it is valid");
                        state.set_error(Some(e.to_string()));
                        renew_at = Instant::now() + delay;
                    }
                }
            }
            changed = bundles.changed() => {
                if changed.is_err() {
                    return;
                }
                bundles.borrow_and_update();
                republish(state, current.as_ref());
            }
            () = drain.signaled() => return,
        }
    }
}

/// Publishes the certified key with the latest roots.
fn republish(state: &super::IdentityState, certified: Option<&Certified>) {
    let (Some(certified), Some(bundle)) = (certified, state.trust_bundle()) else {
        return;
    };
    state.publish(Identity {
        spiffe_id: certified.spiffe_id.clone(),
        cert_chain: certified.chain.clone(),
        key: certified.key.clone_key(),
        roots: bundle.roots.clone(),
        not_before: certified.not_before,
        not_after: certified.not_after,
        serial: certified.serial.clone(),
    });
}

async fn certify(
    shared: &Shared,
    config: &IdentityConfig,
    resolver: Option<&hickory_resolver::TokioResolver>,
    trust_domain: TrustDomain,
) -> Result<(Certified, TrustBundle), CertifyError> {
    let token = config.token.read().map_err(CertifyError::Token)?;
    let spiffe_id = SpiffeId::new(
        trust_domain,
        &shared.config.namespace,
        &config.service_account,
    )
    .map_err(|e| CertifyError::Csr(e.to_string()))?;
    let (key, csr) = make_csr(&spiffe_id).map_err(|e| CertifyError::Csr(e.to_string()))?;
    let (channel, _) = discovery::dial(&shared.config.control_plane, resolver).await?;
    let mut client = IdentityClient::new(channel);
    let call = client.certify(v1::CertifyRequest { token, csr });
    let response = tokio::time::timeout(CERTIFY_TIMEOUT, call)
        .await
        .map_err(|_| CertifyError::Timeout(CERTIFY_TIMEOUT))?
        .map_err(|status| CertifyError::Refused {
            code: status.code(),
            message: status.message().to_owned(),
        })?
        .into_inner();
    accept(response, &spiffe_id, key)
}

/// A fresh key and a CSR naming only `id`.
fn make_csr(id: &SpiffeId) -> Result<(PrivatePkcs8KeyDer<'static>, Vec<u8>), rcgen::Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.to_string().try_into()?)];
    let csr = params.serialize_request(&key)?;
    Ok((
        PrivatePkcs8KeyDer::from(key.serialize_der()),
        csr.der().to_vec(),
    ))
}

/// Checks the answer is for our identity before using it.
fn accept(
    response: v1::CertifyResponse,
    expected: &SpiffeId,
    key: PrivatePkcs8KeyDer<'static>,
) -> Result<(Certified, TrustBundle), CertifyError> {
    let answer = |m: String| CertifyError::Answer(m);
    let bundle = response
        .trust_bundle
        .as_ref()
        .ok_or_else(|| answer("no trust bundle".into()))
        .and_then(|b| TrustBundle::try_from(b).map_err(|e| answer(e.to_string())))?;
    let chain: Vec<CertificateDer<'static>> = response
        .certificate_chain
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    Ok((check_leaf(chain, expected, key)?, bundle))
}

/// Checks that a chain's leaf names exactly `expected`, and reads its validity.
fn check_leaf(
    chain: Vec<CertificateDer<'static>>,
    expected: &SpiffeId,
    key: PrivatePkcs8KeyDer<'static>,
) -> Result<Certified, CertifyError> {
    let answer = |m: String| CertifyError::Answer(m);
    let leaf = chain
        .first()
        .ok_or_else(|| answer("an empty certificate chain".into()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| answer(format!("the leaf does not parse: {e}")))?;
    let uris: Vec<&str> = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let expected_text = expected.to_string();
    if uris != [expected_text.as_str()] {
        return Err(answer(format!(
            "the leaf names {uris:?}, not {expected_text}"
        )));
    }
    let time = |t: x509_parser::time::ASN1Time| {
        let seconds = u64::try_from(t.timestamp()).unwrap_or(0);
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    };
    let certified = Certified {
        spiffe_id: expected.clone(),
        not_before: time(parsed.validity().not_before),
        not_after: time(parsed.validity().not_after),
        serial: parsed.raw_serial_as_string().replace(':', ""),
        chain,
        key,
    };
    Ok(certified)
}

/// The identity saved in the state directory, if it is this proxy's (same
/// namespace and service account) and still valid. A damaged file is logged and
/// ignored: the proxy then certifies as if it had none.
fn restore(shared: &Shared, config: &IdentityConfig) -> Option<Certified> {
    let dir = shared.config.state_dir.as_ref()?;
    let saved = match super::saved::load(dir) {
        Ok(saved) => saved?,
        Err(e) => {
            tracing::warn!(path = %super::saved::path(dir).display(), error = %e, "ignoring the saved identity");
            return None;
        }
    };
    let chain: Vec<CertificateDer<'static>> =
        saved.chain.into_iter().map(CertificateDer::from).collect();
    let (_, leaf) = x509_parser::parse_x509_certificate(chain.first()?).ok()?;
    let named = leaf
        .subject_alternative_name()
        .ok()
        .flatten()?
        .value
        .general_names
        .iter()
        .find_map(|n| match n {
            GeneralName::URI(uri) => SpiffeId::parse(uri).ok(),
            _ => None,
        })?;
    if named.namespace != shared.config.namespace || named.service_account != config.service_account
    {
        tracing::info!(saved = %named, "the saved identity is another workload's; not using it");
        return None;
    }
    let certified = check_leaf(chain, &named, PrivatePkcs8KeyDer::from(saved.key)).ok()?;
    (SystemTime::now() < certified.not_after).then_some(certified)
}

/// Saves a new certificate and its key in the state directory, if there is one.
async fn keep(shared: &Shared, certified: &Certified) {
    let Some(dir) = shared.config.state_dir.clone() else {
        return;
    };
    let saved = super::saved::Saved {
        key: certified.key.secret_pkcs8_der().to_vec(),
        chain: certified.chain.iter().map(|c| c.to_vec()).collect(),
    };
    match tokio::task::spawn_blocking(move || super::saved::save(&dir, &saved)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not save the identity in the state directory")
        }
        Err(e) => tracing::warn!(error = %e, "saving the identity failed"),
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
