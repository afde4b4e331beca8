//! `weftctl check` (as `linkerd check`): is Weft installed and working on this
//! cluster? Each line is ✓ or ✗ with the reason; the exit code says whether all
//! passed. It reads the cluster with the caller's kubeconfig and asks the control
//! plane (`GetWebhook`) what its webhook serves.
//!
//! Gathering is async and talks to the API server; each verdict is a pure function
//! of what was gathered, tested below.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use weft_proto::v1;

use crate::inject::pod::{INJECT_LABEL, PROXY_CONTAINER, VERSION_ANNOTATION};
use crate::inject::source;

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub ok: bool,
    pub what: String,
    pub detail: String,
}

impl Line {
    fn pass(what: &str, detail: impl Into<String>) -> Line {
        Line {
            ok: true,
            what: what.to_owned(),
            detail: detail.into(),
        }
    }
    fn fail(what: &str, detail: impl Into<String>) -> Line {
        Line {
            ok: false,
            what: what.to_owned(),
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = if self.ok { "✓" } else { "✗" };
        write!(f, "{mark} {}: {}", self.what, self.detail)
    }
}

/// Where Weft is installed.
#[derive(Debug, Clone)]
pub struct Install {
    pub namespace: String,
    pub deployment: String,
    pub service_account: String,
    pub webhook_configuration: String,
    pub injector_config_map: String,
}

impl Default for Install {
    fn default() -> Install {
        Install {
            namespace: "weft".to_owned(),
            deployment: "weft-control-plane".to_owned(),
            service_account: "weft-control-plane".to_owned(),
            webhook_configuration: "weft-sidecar-injector".to_owned(),
            injector_config_map: "weft-injector".to_owned(),
        }
    }
}

/// Native sidecars (`restartPolicy: Always` on an init container) are on by default
/// from Kubernetes 1.29.
const NATIVE_SIDECARS_MINOR: u32 = 29;
/// A webhook certificate closer than this to its end fails the check.
const MIN_CERT_LIFE_SECONDS: i64 = 3600;

/// Runs every check. `webhook` is the control plane's answer to `GetWebhook` (or why
/// there is none).
pub async fn run(
    client: &Client,
    install: &Install,
    webhook: Result<v1::WebhookStatus, String>,
    now: i64,
) -> Vec<Line> {
    let mut lines = vec![
        api_version(client).await,
        crds(client).await,
        control_plane_pods(client, install).await,
    ];
    lines.push(match &webhook {
        Ok(_) => Line::pass("control plane API", "answers GetWebhook"),
        Err(reason) => Line::fail("control plane API", reason.clone()),
    });
    lines.push(rbac(client, install).await);
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let configuration = configurations
        .get_opt(&install.webhook_configuration)
        .await
        .map_err(|e| e.to_string());
    lines.extend(webhook_lines(
        install,
        configuration,
        webhook.as_ref().ok(),
        now,
    ));
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &install.namespace);
    lines.push(
        match config_maps.get_opt(&install.injector_config_map).await {
            Ok(found) => settings_line(found.as_ref()),
            Err(e) => Line::fail("injector settings", e.to_string()),
        },
    );
    lines.extend(namespaces(client, install).await);
    lines
}

async fn api_version(client: &Client) -> Line {
    match client.apiserver_version().await {
        Ok(info) => version_line(&info.major, &info.minor, &info.git_version),
        Err(e) => Line::fail("Kubernetes API", e.to_string()),
    }
}

fn version_line(major: &str, minor: &str, git_version: &str) -> Line {
    let minor_number: u32 = minor.trim_end_matches('+').parse().unwrap_or(0);
    if major == "1" && minor_number >= NATIVE_SIDECARS_MINOR {
        Line::pass("Kubernetes API", format!("{git_version}: native sidecars"))
    } else {
        Line::fail(
            "Kubernetes API",
            format!(
                "{git_version}: native sidecars need 1.{NATIVE_SIDECARS_MINOR} or later; \
                 older clusters are not supported by the injector"
            ),
        )
    }
}

async fn crds(client: &Client) -> Line {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut missing = Vec::new();
    for name in ["servicepolicies.weft.io", "authorizationpolicies.weft.io"] {
        let established = match api.get_opt(name).await {
            Ok(Some(crd)) => crd
                .status
                .and_then(|s| s.conditions)
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Established" && c.status == "True"),
            Ok(None) => false,
            Err(e) => return Line::fail("CRDs", e.to_string()),
        };
        if !established {
            missing.push(name);
        }
    }
    if missing.is_empty() {
        Line::pass(
            "CRDs",
            "servicepolicies.weft.io, authorizationpolicies.weft.io established",
        )
    } else {
        Line::fail("CRDs", format!("not established: {}", missing.join(", ")))
    }
}

async fn control_plane_pods(client: &Client, install: &Install) -> Line {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &install.namespace);
    let what = "control plane";
    match api.get_opt(&install.deployment).await {
        Ok(Some(deployment)) => {
            let wanted = deployment.spec.replicas.unwrap_or(1);
            let ready = deployment
                .status
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            let detail = format!("{ready}/{wanted} replicas ready");
            if ready > 0 {
                Line::pass(what, detail)
            } else {
                Line::fail(what, detail)
            }
        }
        Ok(None) => Line::fail(
            what,
            format!("no Deployment {}/{}", install.namespace, install.deployment),
        ),
        Err(e) => Line::fail(what, e.to_string()),
    }
}

/// What the control plane must be allowed to do: (verb, group, resource,
/// namespace, name).
fn needed(install: &Install) -> Vec<(&'static str, &'static str, &'static str, String, String)> {
    let ns = install.namespace.clone();
    let all = String::new;
    vec![
        ("watch", "", "services", all(), all()),
        ("watch", "", "pods", all(), all()),
        ("watch", "discovery.k8s.io", "endpointslices", all(), all()),
        ("watch", "weft.io", "servicepolicies", all(), all()),
        ("watch", "weft.io", "authorizationpolicies", all(), all()),
        (
            "create",
            "authentication.k8s.io",
            "tokenreviews",
            all(),
            all(),
        ),
        ("update", "coordination.k8s.io", "leases", ns.clone(), all()),
        ("get", "", "secrets", ns.clone(), "weft-ca".to_owned()),
        (
            "watch",
            "",
            "configmaps",
            ns,
            install.injector_config_map.clone(),
        ),
        (
            "get",
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            all(),
            install.webhook_configuration.clone(),
        ),
        (
            "patch",
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            all(),
            install.webhook_configuration.clone(),
        ),
    ]
}

async fn rbac(client: &Client, install: &Install) -> Line {
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let user = format!(
        "system:serviceaccount:{}:{}",
        install.namespace, install.service_account
    );
    let mut refused = Vec::new();
    let wanted = needed(install);
    for (verb, group, resource, namespace, name) in &wanted {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.clone()),
                groups: Some(vec![
                    "system:serviceaccounts".to_owned(),
                    format!("system:serviceaccounts:{}", install.namespace),
                ]),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some((*verb).to_owned()),
                    group: Some((*group).to_owned()),
                    resource: Some((*resource).to_owned()),
                    namespace: (!namespace.is_empty()).then(|| namespace.clone()),
                    name: (!name.is_empty()).then(|| name.clone()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        match api.create(&PostParams::default(), &review).await {
            Ok(answer) if answer.status.as_ref().is_some_and(|s| s.allowed) => {}
            Ok(_) => refused.push(describe(verb, resource, namespace, name)),
            Err(e) => return Line::fail("RBAC", e.to_string()),
        }
    }
    if refused.is_empty() {
        Line::pass(
            "RBAC",
            format!(
                "{} may do the {} things it needs",
                install.service_account,
                wanted.len()
            ),
        )
    } else {
        Line::fail("RBAC", format!("{user} may not {}", refused.join("; ")))
    }
}

fn describe(verb: &str, resource: &str, namespace: &str, name: &str) -> String {
    let object = if name.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}/{name}")
    };
    if namespace.is_empty() {
        format!("{verb} {object}")
    } else {
        format!("{verb} {object} in {namespace}")
    }
}

/// The webhook's configuration, its caBundle against the certificate the control
/// plane serves, and that certificate's life.
pub fn webhook_lines(
    install: &Install,
    configuration: Result<Option<MutatingWebhookConfiguration>, String>,
    served: Option<&v1::WebhookStatus>,
    now: i64,
) -> Vec<Line> {
    let what = "webhook configuration";
    let configuration = match configuration {
        Ok(Some(configuration)) => configuration,
        Ok(None) => {
            return vec![Line::fail(
                what,
                format!(
                    "no MutatingWebhookConfiguration {}",
                    install.webhook_configuration
                ),
            )]
        }
        Err(e) => return vec![Line::fail(what, e)],
    };
    let webhooks = configuration.webhooks.clone().unwrap_or_default();
    let mut lines = vec![if webhooks.is_empty() {
        Line::fail(
            what,
            format!("{} has no webhooks", install.webhook_configuration),
        )
    } else {
        Line::pass(
            what,
            format!(
                "{}: {}",
                install.webhook_configuration,
                webhooks
                    .iter()
                    .map(|w| format!(
                        "{} (failurePolicy {})",
                        w.name,
                        w.failure_policy.as_deref().unwrap_or("Fail")
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    }];
    let Some(served) = served else {
        lines.push(Line::fail(
            "webhook caBundle",
            "cannot compare: the control plane did not say what it serves",
        ));
        return lines;
    };
    let chain: Vec<CertificateDer<'static>> = pem::parse_many(&served.certificate_chain)
        .unwrap_or_default()
        .into_iter()
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    let mut wrong = Vec::new();
    for webhook in &webhooks {
        let bundle = webhook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default();
        let name = called_as(&webhook.client_config, &install.namespace);
        if let Err(reason) = verify(&bundle, &chain, &name, now) {
            wrong.push(format!("{}: {reason}", webhook.name));
        } else if bundle.trim() != served.ca_bundle.trim() {
            wrong.push(format!(
                "{}: verifies today, but is not the mesh CA's current roots",
                webhook.name
            ));
        }
    }
    lines.push(if wrong.is_empty() {
        Line::pass(
            "webhook caBundle",
            "the mesh CA's roots, and they verify the webhook's certificate",
        )
    } else {
        Line::fail("webhook caBundle", wrong.join("; "))
    });
    let left = served.not_after - now;
    lines.push(if chain.is_empty() {
        Line::fail("webhook certificate", "none issued yet")
    } else if left < MIN_CERT_LIFE_SECONDS {
        Line::fail(
            "webhook certificate",
            format!("expires in {left} s; the control plane renews at 70% of its life"),
        )
    } else {
        Line::pass(
            "webhook certificate",
            format!(
                "valid for {} h more, for {}",
                left / 3600,
                served.names.join(", ")
            ),
        )
    });
    lines
}

/// The name the API server checks the webhook's certificate against.
fn called_as(
    config: &k8s_openapi::api::admissionregistration::v1::WebhookClientConfig,
    default_namespace: &str,
) -> String {
    if let Some(url) = &config.url {
        let rest = url.trim_start_matches("https://");
        let authority = rest.split('/').next().unwrap_or(rest);
        return match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6).to_owned(),
            None => authority
                .rsplit_once(':')
                .map_or(authority, |(h, _)| h)
                .to_owned(),
        };
    }
    match &config.service {
        Some(service) => format!("{}.{}.svc", service.name, service.namespace),
        None => format!("weft-control-plane.{default_namespace}.svc"),
    }
}

/// Whether `bundle` (PEM roots) verifies `chain` for `name` at `now`, as the API
/// server will.
fn verify(
    bundle: &str,
    chain: &[CertificateDer<'static>],
    name: &str,
    now: i64,
) -> Result<(), String> {
    let roots = pem::parse_many(bundle).map_err(|e| format!("caBundle is not PEM: {e}"))?;
    if roots.is_empty() {
        return Err("caBundle is empty".to_owned());
    }
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(CertificateDer::from(root.into_contents()))
            .map_err(|e| format!("caBundle holds a bad certificate: {e}"))?;
    }
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err("the webhook has no certificate".to_owned());
    };
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(store),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| format!("{name}: {e}"))?;
    verifier
        .verify_server_cert(
            leaf,
            intermediates,
            &server_name,
            &[],
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.max(0) as u64)),
        )
        .map(|_| ())
        .map_err(|e| format!("does not verify the webhook's certificate for {name}: {e}"))
}

pub fn settings_line(config_map: Option<&ConfigMap>) -> Line {
    let what = "injector settings";
    match source::from_config_map(config_map) {
        Ok(settings) => Line::pass(
            what,
            format!(
                "{}: image {}, control plane {}",
                if config_map.is_some() {
                    "from the ConfigMap"
                } else {
                    "defaults (no ConfigMap)"
                },
                settings.proxy_image,
                settings.control_plane
            ),
        ),
        Err(e) => Line::fail(
            what,
            format!("{e}; the control plane keeps its last good settings"),
        ),
    }
}

async fn namespaces(client: &Client, install: &Install) -> Vec<Line> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let (namespaces, pods) = match (
        namespaces.list(&ListParams::default()).await,
        pods.list(&ListParams::default()).await,
    ) {
        (Ok(n), Ok(p)) => (n.items, p.items),
        (Err(e), _) | (_, Err(e)) => return vec![Line::fail("namespaces", e.to_string())],
    };
    let mut by_namespace: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for pod in pods {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        by_namespace.entry(namespace).or_default().push(pod);
    }
    namespaces
        .iter()
        .filter_map(|namespace| {
            let name = namespace.metadata.name.clone()?;
            let label = namespace
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(INJECT_LABEL))
                .cloned();
            let pods = by_namespace
                .get(&name)
                .map(Vec::as_slice)
                .unwrap_or_default();
            namespace_line(&name, label.as_deref(), pods, install)
        })
        .collect()
}

/// The injection state of one namespace; `None` for namespaces Weft has nothing to
/// do with (not labelled, no meshed pod).
pub fn namespace_line(
    namespace: &str,
    label: Option<&str>,
    pods: &[Pod],
    install: &Install,
) -> Option<Line> {
    let what = format!("namespace {namespace}");
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .collect();
    let meshed = |pod: &Pod| {
        pod.spec.as_ref().is_some_and(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .any(|c| c.name == PROXY_CONTAINER)
        })
    };
    let opted_out = |pod: &Pod| {
        pod.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(INJECT_LABEL))
            .is_some_and(|v| v == "disabled")
            || pod.spec.as_ref().and_then(|s| s.host_network) == Some(true)
    };
    let with_proxy: Vec<&Pod> = live.iter().copied().filter(|p| meshed(p)).collect();
    if label.is_none() && with_proxy.is_empty() {
        return None;
    }
    let version = env!("CARGO_PKG_VERSION");
    let outdated: Vec<String> = with_proxy
        .iter()
        .filter_map(|pod| {
            let injected = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(VERSION_ANNOTATION))
                .map(String::as_str)
                .unwrap_or("unknown");
            (injected != version).then(|| {
                format!(
                    "{} ({injected})",
                    pod.metadata.name.as_deref().unwrap_or("?")
                )
            })
        })
        .collect();
    let system = namespace == "kube-system" || namespace == install.namespace;
    let state = match label {
        Some("enabled") if system => "labelled enabled, but never injected",
        Some("enabled") => "injection enabled",
        Some("disabled") => "injection disabled",
        Some(_) => "weft.io/inject has an unknown value",
        None => "not labelled",
    };
    let missing: Vec<String> = if label == Some("enabled") && !system {
        live.iter()
            .filter(|p| !meshed(p) && !opted_out(p))
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect()
    } else {
        Vec::new()
    };
    let mut detail = format!(
        "{state}; {} of {} pods meshed",
        with_proxy.len(),
        live.len()
    );
    let mut ok = true;
    if !missing.is_empty() {
        ok = false;
        detail.push_str(&format!(
            "; without the proxy (created before the label? restart them): {}",
            missing.join(", ")
        ));
    }
    if !outdated.is_empty() {
        ok = false;
        detail.push_str(&format!(
            "; running another proxy version than {version} (restart them): {}",
            outdated.join(", ")
        ));
    }
    Some(Line { ok, what, detail })
}

#[cfg(test)]
mod tests;
