//! Wires the control plane together on one gRPC port: Admin, Discovery, Identity and
//! the standard grpc.health.v1 service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use weft_proto::model::TrustDomain;
use weft_proto::v1::admin_server::AdminServer;
use weft_proto::v1::discovery_server::DiscoveryServer;
use weft_proto::v1::identity_server::IdentityServer;

use crate::admin::{AdminService, ServedView, WebhookInfo};
use crate::apply::Applier;
use crate::discovery::registration::Registrar;
use crate::discovery::DiscoveryService;
use crate::identity::review::Reviewer;
use crate::identity::{parse_duration, Ca, CaFiles, CaSource, IdentityService, Proof, Tokens};
use crate::inject::certificate::{self, ServingCert};
use crate::inject::{source, webhook};
use crate::kubernetes::{self, KubeStore};
use crate::registry::Registry;
use crate::store::{EmbeddedStore, Store};
use crate::{health, view};

#[derive(Debug, Clone, Parser, Serialize)]
#[command(name = "weft-control-plane", version, about = "The Weft control plane")]
pub struct Config {
    /// gRPC listener for Admin, Discovery and health.
    #[arg(long, env = "WEFT_LISTEN", default_value = "127.0.0.1:15010")]
    pub listen: SocketAddr,
    /// Directory of the embedded store.
    #[arg(long, env = "WEFT_DATA_DIR", default_value = "weft-data")]
    pub data_dir: PathBuf,
    /// How long a disconnected proxy's workload stays an endpoint, in milliseconds.
    #[arg(long, env = "WEFT_REGISTRATION_GRACE_MS", default_value_t = 5000)]
    pub registration_grace_ms: u64,
    /// How long to gather store changes before rebuilding the view and pushing, in
    /// milliseconds: 1,000 endpoint changes in a burst become one push per proxy.
    #[arg(long, env = "WEFT_DEBOUNCE_MS", default_value_t = 20)]
    pub debounce_ms: u64,
    /// Log filter (tracing-subscriber syntax).
    #[arg(long, env = "WEFT_LOG", default_value = "info")]
    pub log: String,
    /// The SPIFFE trust domain of every identity this control plane issues.
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// Lifetime of issued certificates (`24h`, `90m`, `3s`); proxies renew at ~70%.
    #[arg(long, env = "WEFT_CERT_TTL", default_value = "24h")]
    pub cert_ttl: String,
    /// The CA certificate (PEM) that signs leaves; with --ca-key. Without both, a CA
    /// is generated at first start and kept in the store.
    #[arg(long, env = "WEFT_CA_CERT", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// The CA's private key (PEM, PKCS#8). Never logged or sent anywhere.
    #[arg(long, env = "WEFT_CA_KEY", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// When --ca-cert is an intermediate: the certificates above it, up to and
    /// including the root (PEM).
    #[arg(long, env = "WEFT_CA_CHAIN", requires = "ca_cert")]
    pub ca_chain: Option<PathBuf>,
    /// Run on Kubernetes: the API server is the store (no --data-dir), Services and
    /// EndpointSlices are the mesh, Weft's kinds are CRDs, and proxies prove who they
    /// are with projected ServiceAccount tokens.
    #[arg(long, env = "WEFT_KUBERNETES")]
    pub kubernetes: bool,
    /// The kubeconfig to use with --kubernetes; default: $KUBECONFIG, then in-cluster.
    #[arg(long, env = "WEFT_KUBECONFIG", requires = "kubernetes")]
    pub kubeconfig: Option<PathBuf>,
    /// The control plane's own namespace (its CA Secret and Lease), with --kubernetes.
    #[arg(long, env = "POD_NAMESPACE", default_value = "weft")]
    pub namespace: String,
    /// This replica's name in the Lease, with --kubernetes (the Pod's name).
    #[arg(long, env = "POD_NAME", default_value = "weft-control-plane")]
    pub pod_name: String,
    /// The DNS suffix of Kubernetes Services.
    #[arg(long, env = "WEFT_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// With --kubernetes: serve the sidecar injection webhook (HTTPS) here.
    #[arg(long, env = "WEFT_WEBHOOK_LISTEN", requires = "kubernetes")]
    pub webhook_listen: Option<SocketAddr>,
    /// The MutatingWebhookConfiguration that calls the webhook: its caBundle is kept
    /// equal to the mesh CA's roots, and the webhook's certificate covers the names
    /// it calls the webhook by.
    #[arg(
        long,
        env = "WEFT_WEBHOOK_CONFIGURATION",
        default_value = "weft-sidecar-injector"
    )]
    pub webhook_configuration: String,
    /// The ConfigMap (in --namespace) with the injector's settings, key `config.yaml`.
    #[arg(
        long,
        env = "WEFT_INJECTOR_CONFIG_MAP",
        default_value = "weft-injector"
    )]
    pub injector_config_map: String,
    /// The control plane's own Service, whose DNS names the webhook's certificate
    /// covers.
    #[arg(long, env = "WEFT_SERVICE_NAME", default_value = "weft-control-plane")]
    pub service_name: String,
    /// The OTLP/gRPC collector (`host:port`) served to proxies for every service
    /// whose `telemetry.tracing` names none; empty: such services export no spans.
    #[arg(long, env = "WEFT_TRACE_COLLECTOR", default_value = "", value_parser = collector)]
    pub trace_collector: String,
}

/// `--trace-collector`: empty, or `host:port` as a Service's own collector is checked.
fn collector(value: &str) -> Result<String, String> {
    if !value.is_empty() {
        weft_proto::model::validate_host_port("--trace-collector", value)
            .map_err(|e| e.to_string())?;
    }
    Ok(value.to_owned())
}

impl Config {
    /// The CA settings, checked; every problem is reported.
    pub fn ca_source(&self) -> Result<CaSource, Vec<String>> {
        let mut errors = Vec::new();
        let trust_domain = TrustDomain::new(&self.trust_domain)
            .map_err(|e| errors.push(format!("--trust-domain: {}", e.reason)))
            .ok();
        let cert_ttl = parse_duration(&self.cert_ttl)
            .map_err(|e| errors.push(format!("--cert-ttl: {e}")))
            .ok();
        let files = match (&self.ca_cert, &self.ca_key) {
            (Some(cert), Some(key)) => Some(CaFiles {
                cert: cert.clone(),
                key: key.clone(),
                chain: self.ca_chain.clone(),
            }),
            _ => None,
        };
        match (trust_domain, cert_ttl) {
            (Some(trust_domain), Some(cert_ttl)) if errors.is_empty() => Ok(CaSource {
                trust_domain,
                cert_ttl,
                files,
            }),
            _ => Err(errors),
        }
    }
}

/// Opens the store, builds the first view and serves until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let ca_source = config
        .ca_source()
        .map_err(|errors| anyhow::anyhow!("{}", errors.join("; ")))?;
    let trust_domain = ca_source.trust_domain.to_string();
    let mut kube = None;
    let (store, proof): (Arc<dyn Store>, Option<Proof>) = if config.kubernetes {
        let client = kubernetes::client(config.kubeconfig.as_ref()).await?;
        let store = KubeStore::start(
            client.clone(),
            kubernetes::Settings {
                namespace: config.namespace.clone(),
                cluster_domain: config.cluster_domain.clone(),
                trust_domain,
            },
        )
        .await?;
        let leading =
            kubernetes::lease::run(client.clone(), &config.namespace, config.pod_name.clone());
        tokio::spawn(kubernetes::status::run(store.clone(), leading.clone()));
        kube = Some((client.clone(), leading));
        (
            store as Arc<dyn Store>,
            Some(Proof::ServiceAccounts(Reviewer::new(client))),
        )
    } else {
        (Arc::new(EmbeddedStore::open(&config.data_dir)?), None)
    };
    // Before the first view: the trust bundle is then in it from the start.
    let ca = Arc::new(Ca::open(ca_source, store.clone()).await?);
    let tokens = Arc::new(Tokens::new(store.clone()));
    let proof = proof.unwrap_or_else(|| Proof::JoinTokens(tokens.clone()));
    let contents = store.contents().await?;
    let defaults = view::Defaults {
        trace_collector: config.trace_collector.clone(),
    };
    let first = view::build(&contents, None, &defaults);
    let (considered_tx, considered_rx) = watch::channel(first.revision);
    let (view_tx, view_rx) = watch::channel(Arc::new(first));
    let (unhealthy_tx, unhealthy_rx) = watch::channel(health::Unhealthy::default());
    tokio::spawn(health::run(store.clone(), unhealthy_tx));
    tokio::spawn(view::maintain(
        store.clone(),
        Duration::from_millis(config.debounce_ms),
        view_tx,
        unhealthy_rx,
        considered_tx,
        defaults,
    ));

    let registry = Registry::new();
    let registrar = Registrar::new(
        store.clone(),
        Duration::from_millis(config.registration_grace_ms),
    );
    registrar.expire_leftovers(&contents.registrations);

    let webhook = match (&kube, config.webhook_listen) {
        (Some((client, leading)), Some(listen)) => {
            Some(start_webhook(&config, listen, client, leading, &ca).await?)
        }
        _ => None,
    };
    let admin = AdminService {
        applier: Arc::new(Applier::new(store.clone())),
        store: store.clone(),
        registry: registry.clone(),
        ca: ca.clone(),
        tokens: tokens.clone(),
        view: ServedView {
            view: view_rx.clone(),
            considered: considered_rx,
            revision: store.revision(),
        },
        webhook,
    };
    let identity = IdentityService {
        ca: ca.clone(),
        proof,
    };
    let discovery = DiscoveryService {
        view: view_rx,
        registry,
        registrar,
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AdminServer<AdminService>>().await;
    health
        .set_serving::<DiscoveryServer<DiscoveryService>>()
        .await;
    health
        .set_serving::<IdentityServer<IdentityService>>()
        .await;

    tracing::info!(
        addr = %listener.local_addr()?,
        store = if config.kubernetes { "kubernetes" } else { "embedded" },
        data_dir = %config.data_dir.display(),
        revision = contents.revision,
        trust_domain = %ca.trust_domain(),
        "control plane serving"
    );
    // Nagle off on every accepted connection: tonic's own `tcp_nodelay` only applies
    // when it binds the listener itself. With Nagle on, a small unary answer (a
    // Certify, an Admin call) waited for the peer's delayed ACK: ~40 ms per call.
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        accepted.and_then(|stream| {
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    });
    let (stopping_tx, mut stopping) = watch::channel(false);
    let signal = async move {
        shutdown.await;
        stopping_tx.send_replace(true);
    };
    let server = tonic::transport::Server::builder()
        // Notice proxies that vanished without closing (a partition, a frozen node).
        .http2_keepalive_interval(Some(Duration::from_secs(15)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(health_service)
        .add_service(AdminServer::new(admin))
        .add_service(DiscoveryServer::new(discovery))
        .add_service(IdentityServer::new(identity))
        .serve_with_incoming_shutdown(incoming, signal);
    // A graceful shutdown waits for every call to end, and a proxy's discovery stream
    // never does: without a limit a replica took its whole termination grace period
    // (30 s) to stop. Calls in flight get SHUTDOWN_GRACE; then the streams close and
    // their proxies reconnect to another replica, serving their last config meanwhile.
    let grace = async {
        let _ = stopping.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = server => served?,
        _ = grace => tracing::info!(
            grace = ?SHUTDOWN_GRACE,
            "closing the streams still open"
        ),
    }
    Ok(())
}

/// How long calls in flight may take to finish once the control plane is told to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Starts the injection webhook: its settings from the ConfigMap, its certificate
/// and caBundle upkeep, and its HTTPS listener (which serves once a certificate is
/// issued; the API server's calls before that fail as with the webhook down).
async fn start_webhook(
    config: &Config,
    listen: SocketAddr,
    client: &kube::Client,
    leading: &watch::Receiver<bool>,
    ca: &Arc<Ca>,
) -> anyhow::Result<WebhookInfo> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("--webhook-listen {listen}: {e}"))?;
    let cert = Arc::new(ServingCert::default());
    tokio::spawn(certificate::maintain(
        ca.clone(),
        client.clone(),
        certificate::Names {
            configuration: config.webhook_configuration.clone(),
            service: config.service_name.clone(),
            namespace: config.namespace.clone(),
            cluster_domain: config.cluster_domain.clone(),
        },
        cert.clone(),
        leading.clone(),
    ));
    let injector = Arc::new(webhook::Injector {
        settings: source::watch(
            client.clone(),
            &config.namespace,
            &config.injector_config_map,
        ),
        control_plane_namespace: config.namespace.clone(),
    });
    tracing::info!(addr = %listen, configuration = config.webhook_configuration, "injection webhook");
    let serving = cert.clone();
    tokio::spawn(async move {
        if let Err(error) =
            webhook::serve(listener, serving, injector, std::future::pending()).await
        {
            tracing::error!(%error, "injection webhook stopped");
        }
    });
    Ok(WebhookInfo {
        configuration: config.webhook_configuration.clone(),
        cert,
    })
}
