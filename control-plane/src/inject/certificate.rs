//! The webhook's TLS, with no cert-manager: each replica gets a serving certificate
//! from the mesh CA for the names its `MutatingWebhookConfiguration` calls it by, and
//! the leader keeps that configuration's `caBundle` equal to the mesh CA's roots, so
//! the API server trusts whichever replica it reaches.
//!
//! Both are checked every [`PERIOD`]: a certificate is renewed at 70% of its life or
//! when the names change; a `caBundle` that drifted (edited by hand, a CA rotation)
//! is put back.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use rcgen::KeyPair;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::watch;

use crate::identity::Ca;

/// How often the certificate and the `caBundle` are checked.
pub const PERIOD: Duration = Duration::from_secs(5);
/// Renew when this share of the certificate's life has passed.
const RENEW_AT: f64 = 0.7;

/// Where the webhook is and what it is called.
#[derive(Debug, Clone)]
pub struct Names {
    /// The `MutatingWebhookConfiguration` that calls this webhook.
    pub configuration: String,
    /// The control plane's Service and namespace (the default `clientConfig.service`).
    pub service: String,
    pub namespace: String,
    pub cluster_domain: String,
}

/// The serving certificate, swapped whole on renewal; the TLS acceptor reads it per
/// handshake.
#[derive(Debug, Default)]
pub struct ServingCert {
    current: ArcSwapOption<Issued>,
}

#[derive(Debug)]
struct Issued {
    key: Arc<CertifiedKey>,
    names: Vec<String>,
    issued_at: i64,
    not_after: i64,
    /// PEM of the leaf and its chain, for `weftctl check`.
    chain_pem: String,
}

/// What `weftctl check` is told about the webhook's certificate.
#[derive(Debug, Clone, Default)]
pub struct Description {
    pub chain_pem: String,
    pub names: Vec<String>,
    pub not_after: i64,
}

impl ServingCert {
    pub fn describe(&self) -> Option<Description> {
        self.current.load().as_ref().map(|issued| Description {
            chain_pem: issued.chain_pem.clone(),
            names: issued.names.clone(),
            not_after: issued.not_after,
        })
    }

    pub fn is_ready(&self) -> bool {
        self.current.load().is_some()
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .load()
            .as_ref()
            .map(|issued| issued.key.clone())
    }
}

/// Keeps the serving certificate fresh (every replica) and the `caBundle` current
/// (the leader only: during a CA rotation the replicas may briefly disagree on the
/// roots, and two writers would undo each other).
pub async fn maintain(
    ca: Arc<Ca>,
    client: Client,
    names: Names,
    cert: Arc<ServingCert>,
    leading: watch::Receiver<bool>,
) {
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client);
    loop {
        let configuration = match configurations.get_opt(&names.configuration).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, name = names.configuration, "cannot read the webhook configuration");
                None
            }
        };
        let wanted = dns_names(&names, configuration.as_ref());
        if needs_renewal(&cert, &wanted, unix_now()) {
            match issue(&ca, &wanted) {
                Ok(issued) => {
                    tracing::info!(names = ?issued.names, "webhook serving certificate issued");
                    cert.current.store(Some(Arc::new(issued)));
                }
                Err(error) => tracing::warn!(%error, "cannot issue the webhook's certificate"),
            }
        }
        if *leading.borrow() {
            if let Some(configuration) = &configuration {
                let bundle = ca_bundle(&ca);
                if let Some(patch) = bundle_patch(configuration, &bundle) {
                    match configurations
                        .patch(
                            &names.configuration,
                            &PatchParams::default(),
                            &Patch::<()>::Json(patch),
                        )
                        .await
                    {
                        Ok(_) => tracing::info!(name = names.configuration, "caBundle updated"),
                        Err(error) => tracing::warn!(%error, "cannot update the caBundle"),
                    }
                }
            }
        }
        tokio::time::sleep(PERIOD).await;
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn needs_renewal(cert: &ServingCert, wanted: &[String], now: i64) -> bool {
    let current = cert.current.load();
    let Some(issued) = current.as_ref() else {
        return true;
    };
    let life = (issued.not_after - issued.issued_at).max(1) as f64;
    issued.names != wanted || (now - issued.issued_at) as f64 >= life * RENEW_AT
}

fn issue(ca: &Ca, names: &[String]) -> anyhow::Result<Issued> {
    let key = KeyPair::generate()?;
    let signed = ca.sign_server(&key, names)?;
    let provider = rustls::crypto::ring::default_provider();
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing_key = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| anyhow::anyhow!("the webhook key: {e}"))?;
    let chain_pem = signed
        .chain
        .iter()
        .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec())))
        .collect();
    Ok(Issued {
        key: Arc::new(CertifiedKey::new(signed.chain, signing_key)),
        names: names.to_vec(),
        issued_at: unix_now(),
        not_after: signed.not_after,
        chain_pem,
    })
}

/// The roots, PEM, concatenated: what `caBundle` must hold.
pub fn ca_bundle(ca: &Ca) -> String {
    ca.bundle().roots.concat()
}

/// The names the API server may call this webhook by: the Service's DNS names (from
/// each webhook's `clientConfig.service`, else the control plane's own Service) and
/// the host of any `clientConfig.url`. Sorted, so a change is a real change.
pub fn dns_names(
    names: &Names,
    configuration: Option<&MutatingWebhookConfiguration>,
) -> Vec<String> {
    let mut services = vec![(names.service.clone(), names.namespace.clone())];
    let mut hosts = Vec::new();
    for webhook in configuration
        .and_then(|c| c.webhooks.as_ref())
        .into_iter()
        .flatten()
    {
        let config = &webhook.client_config;
        if let Some(service) = &config.service {
            services.push((service.name.clone(), service.namespace.clone()));
        }
        if let Some(url) = &config.url {
            if let Some(host) = url_host(url) {
                hosts.push(host);
            }
        }
    }
    let mut all = hosts;
    for (service, namespace) in services {
        all.push(format!("{service}.{namespace}.svc"));
        all.push(format!(
            "{service}.{namespace}.svc.{}",
            names.cluster_domain
        ));
    }
    all.sort();
    all.dedup();
    all
}

/// `https://HOST[:PORT]/path` → HOST (brackets off an IPv6 literal).
fn url_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_owned())
}

/// A JSON patch setting every webhook's `caBundle` to `bundle`, or `None` when all
/// already hold it. Each replace is guarded by a test of the webhook's name, so a
/// configuration edited in between is not patched at the wrong index.
pub fn bundle_patch(
    configuration: &MutatingWebhookConfiguration,
    bundle: &str,
) -> Option<json_patch::Patch> {
    let wanted = k8s_openapi::ByteString(bundle.as_bytes().to_vec());
    let mut operations = Vec::new();
    for (index, webhook) in configuration.webhooks.iter().flatten().enumerate() {
        if webhook.client_config.ca_bundle.as_ref() == Some(&wanted) {
            continue;
        }
        let encoded = serde_json::to_value(&wanted).ok()?;
        operations.extend([
            serde_json::json!({"op": "test", "path": format!("/webhooks/{index}/name"), "value": webhook.name}),
            serde_json::json!({"op": "add", "path": format!("/webhooks/{index}/clientConfig/caBundle"), "value": encoded}),
        ]);
    }
    if operations.is_empty() {
        return None;
    }
    serde_json::from_value(serde_json::Value::Array(operations)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configuration(yaml: &str) -> MutatingWebhookConfiguration {
        serde_yaml::from_str(yaml).expect("valid YAML")
    }

    fn names() -> Names {
        Names {
            configuration: "weft-sidecar-injector".to_owned(),
            service: "weft-control-plane".to_owned(),
            namespace: "weft".to_owned(),
            cluster_domain: "cluster.local".to_owned(),
        }
    }

    const TWO_WEBHOOKS: &str = "
metadata: {name: weft-sidecar-injector}
webhooks:
- name: namespace.inject.weft.io
  clientConfig: {service: {name: weft-control-plane, namespace: weft, path: /inject}}
  admissionReviewVersions: [v1]
  sideEffects: None
- name: pod.inject.weft.io
  clientConfig: {url: 'https://127.0.0.1:40123/inject', caBundle: Zm9v}
  admissionReviewVersions: [v1]
  sideEffects: None
";

    #[test]
    fn the_names_cover_the_service_and_any_url_host() {
        let names = dns_names(&names(), Some(&configuration(TWO_WEBHOOKS)));
        assert_eq!(
            names,
            [
                "127.0.0.1",
                "weft-control-plane.weft.svc",
                "weft-control-plane.weft.svc.cluster.local",
            ]
        );
        assert_eq!(url_host("https://[::1]:8443/x").as_deref(), Some("::1"));
        assert_eq!(
            url_host("https://hooks.example.org/x").as_deref(),
            Some("hooks.example.org")
        );
        assert_eq!(url_host("http://plain/x"), None);
    }

    #[test]
    fn only_webhooks_with_another_bundle_are_patched() {
        let mut config = configuration(TWO_WEBHOOKS);
        let patch = bundle_patch(&config, "PEM").expect("both differ");
        let mut value = serde_json::to_value(&config).expect("a patch");
        json_patch::patch(&mut value, &patch).expect("a patch");
        config = serde_json::from_value(value).expect("a patch");
        for webhook in config.webhooks.as_ref().expect("the patch applies") {
            assert_eq!(
                webhook
                    .client_config
                    .ca_bundle
                    .as_ref()
                    .expect("the patch applies")
                    .0,
                b"PEM"
            );
        }
        assert!(bundle_patch(&config, "PEM").is_none(), "nothing left to do");
    }

    #[test]
    fn a_certificate_is_renewed_when_old_or_when_its_names_change() {
        let cert = ServingCert::default();
        assert!(needs_renewal(&cert, &[], 0), "none yet");
        let key = KeyPair::generate().expect("a key");
        let der = rcgen::CertificateParams::new(vec!["a".to_owned()])
            .expect("certificate parameters")
            .self_signed(&key)
            .expect("certificate parameters")
            .der()
            .clone();
        let signing = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            )))
            .expect("a usable key");
        cert.current.store(Some(Arc::new(Issued {
            key: Arc::new(CertifiedKey::new(vec![der], signing)),
            names: vec!["a".to_owned()],
            issued_at: 1000,
            not_after: 1100,
            chain_pem: String::new(),
        })));
        let a = ["a".to_owned()];
        assert!(!needs_renewal(&cert, &a, 1069));
        assert!(needs_renewal(&cert, &a, 1070), "70% of its life");
        assert!(needs_renewal(&cert, &["b".to_owned()], 1001), "other names");
    }
}
