use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use super::*;

/// A CA (PEM) and a leaf it signed for `names` (PEM chain), valid for a day from
/// the real now.
fn ca_and_leaf(names: &[&str]) -> (String, String, i64) {
    let ca_key = KeyPair::generate().expect("a key");
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).expect("certificate parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params
        .self_signed(&ca_key)
        .expect("certificate parameters");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("a self-signed certificate");
    let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("certificate parameters")
        .signed_by(&leaf_key, &issuer)
        .expect("certificate parameters");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs() as i64;
    (ca.pem(), leaf.pem(), now)
}

fn configuration(bundle: &str, client: &str) -> MutatingWebhookConfiguration {
    let mut configuration: MutatingWebhookConfiguration = serde_yaml::from_str(&format!(
        "metadata: {{name: weft-sidecar-injector}}\nwebhooks:\n- name: namespace.inject.weft.io\n  \
         clientConfig: {client}\n  admissionReviewVersions: [v1]\n  sideEffects: None\n  failurePolicy: Fail\n"
    ))
    .expect("present in the fixture");
    configuration
        .webhooks
        .as_mut()
        .expect("present in the fixture")[0]
        .client_config
        .ca_bundle = Some(k8s_openapi::ByteString(bundle.as_bytes().to_vec()));
    configuration
}

const SERVICE: &str = "{service: {name: weft-control-plane, namespace: weft, path: /inject}}";

#[test]
fn a_bundle_of_the_mesh_ca_passes_and_names_the_failure_policy() {
    let (ca, leaf, now) = ca_and_leaf(&["weft-control-plane.weft.svc"]);
    let served = v1::WebhookStatus {
        certificate_chain: leaf,
        ca_bundle: ca.clone(),
        not_after: now + 86_400,
        names: vec!["weft-control-plane.weft.svc".to_owned()],
        ..v1::WebhookStatus::default()
    };
    let lines = webhook_lines(
        &Install::default(),
        Ok(Some(configuration(&ca, SERVICE))),
        Some(&served),
        now,
    );
    assert!(lines.iter().all(|l| l.ok), "{lines:#?}");
    assert!(
        lines[0].detail.contains("failurePolicy Fail"),
        "{}",
        lines[0]
    );
}

#[test]
fn a_wrong_bundle_is_named_with_its_webhook() {
    let (ca, leaf, now) = ca_and_leaf(&["weft-control-plane.weft.svc"]);
    let (other_ca, _, _) = ca_and_leaf(&["x"]);
    let served = v1::WebhookStatus {
        certificate_chain: leaf,
        ca_bundle: ca,
        not_after: now + 86_400,
        ..v1::WebhookStatus::default()
    };
    let lines = webhook_lines(
        &Install::default(),
        Ok(Some(configuration(&other_ca, SERVICE))),
        Some(&served),
        now,
    );
    let bundle = lines
        .iter()
        .find(|l| l.what == "webhook caBundle")
        .expect("present in the fixture");
    assert!(!bundle.ok);
    assert!(
        bundle.detail.contains("namespace.inject.weft.io")
            && bundle.detail.contains("does not verify"),
        "{bundle}"
    );
}

#[test]
fn a_certificate_for_other_names_fails_as_the_api_server_would() {
    let (ca, leaf, now) = ca_and_leaf(&["elsewhere.example"]);
    let served = v1::WebhookStatus {
        certificate_chain: leaf,
        ca_bundle: ca.clone(),
        not_after: now + 86_400,
        ..v1::WebhookStatus::default()
    };
    let lines = webhook_lines(
        &Install::default(),
        Ok(Some(configuration(
            &ca,
            "{url: 'https://127.0.0.1:4443/inject'}",
        ))),
        Some(&served),
        now,
    );
    let bundle = lines
        .iter()
        .find(|l| l.what == "webhook caBundle")
        .expect("present in the fixture");
    assert!(
        !bundle.ok && bundle.detail.contains("127.0.0.1"),
        "{bundle}"
    );
}

#[test]
fn a_missing_configuration_and_an_expiring_certificate_fail() {
    let lines = webhook_lines(&Install::default(), Ok(None), None, 0);
    assert_eq!(lines.len(), 1);
    assert!(!lines[0].ok && lines[0].detail.contains("weft-sidecar-injector"));

    let (ca, leaf, now) = ca_and_leaf(&["weft-control-plane.weft.svc"]);
    let served = v1::WebhookStatus {
        certificate_chain: leaf,
        ca_bundle: ca.clone(),
        not_after: now + 60,
        ..v1::WebhookStatus::default()
    };
    let lines = webhook_lines(
        &Install::default(),
        Ok(Some(configuration(&ca, SERVICE))),
        Some(&served),
        now,
    );
    let cert = lines
        .iter()
        .find(|l| l.what == "webhook certificate")
        .expect("present in the fixture");
    assert!(
        !cert.ok && cert.detail.contains("expires in 60 s"),
        "{cert}"
    );
}

#[test]
fn native_sidecars_need_1_29() {
    assert!(version_line("1", "37", "v1.37.2").ok);
    assert!(version_line("1", "29+", "v1.29.0-gke").ok);
    assert!(!version_line("1", "28", "v1.28.9").ok);
}

fn pod(yaml: &str) -> Pod {
    serde_yaml::from_str(yaml).expect("valid YAML")
}

#[test]
fn a_labelled_namespace_names_its_unmeshed_and_outdated_pods() {
    let version = env!("CARGO_PKG_VERSION");
    let pods = [
        pod(&format!(
            "metadata: {{name: new, annotations: {{weft.io/proxy-version: '{version}'}}}}\n\
             spec: {{initContainers: [{{name: weft-proxy}}], containers: [{{name: app}}]}}"
        )),
        pod("metadata: {name: old, annotations: {weft.io/proxy-version: 0.0.1}}\n\
             spec: {initContainers: [{name: weft-proxy}], containers: [{name: app}]}"),
        pod("metadata: {name: before-label}\nspec: {containers: [{name: app}]}"),
        pod("metadata: {name: opted, labels: {weft.io/inject: disabled}}\nspec: {containers: [{name: app}]}"),
        pod("metadata: {name: done}\nspec: {containers: [{name: app}]}\nstatus: {phase: Succeeded}"),
    ];
    let line = namespace_line("shop", Some("enabled"), &pods, &Install::default())
        .expect("present in the fixture");
    assert!(!line.ok);
    assert!(
        line.detail
            .starts_with("injection enabled; 2 of 4 pods meshed"),
        "{line}"
    );
    assert!(
        line.detail.contains("restart them): before-label"),
        "{line}"
    );
    assert!(line.detail.contains("old (0.0.1)"), "{line}");
    assert!(
        !line.detail.contains("opted"),
        "opted out on purpose: {line}"
    );

    let fine = namespace_line("shop", Some("enabled"), &pods[..1], &Install::default())
        .expect("present in the fixture");
    assert!(fine.ok, "{fine}");
    assert!(namespace_line("other", None, &pods[2..3], &Install::default()).is_none());
}

#[test]
fn bad_injector_settings_fail_with_the_reason() {
    let config_map: ConfigMap =
        serde_yaml::from_str("metadata: {name: weft-injector}\ndata: {config.yaml: 'proxyUid: 0'}")
            .expect("valid YAML");
    let line = settings_line(Some(&config_map));
    assert!(!line.ok && line.detail.contains("proxyUid"), "{line}");
    assert!(settings_line(None).ok);
}
