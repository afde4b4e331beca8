//! Wires the control plane together on one gRPC port: Admin, Discovery and the
//! standard grpc.health.v1 service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use weft_proto::v1::admin_server::AdminServer;
use weft_proto::v1::discovery_server::DiscoveryServer;

use crate::admin::AdminService;
use crate::apply::Applier;
use crate::discovery::DiscoveryService;
use crate::registry::Registry;
use crate::store::{EmbeddedStore, Store};
use crate::view;

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
}

/// Opens the store, builds the first view and serves until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&config.data_dir)?);
    let contents = store.contents().await?;
    let leftovers: Vec<String> = contents
        .registrations
        .iter()
        .map(|r| r.node_id.clone())
        .collect();
    let (view_tx, view_rx) = watch::channel(Arc::new(view::build(&contents, None)));
    tokio::spawn(view::maintain(
        store.clone(),
        Duration::from_millis(config.debounce_ms),
        view_tx,
    ));

    let registry = Registry::new(
        store.clone(),
        Duration::from_millis(config.registration_grace_ms),
    );
    registry.expire_leftovers(leftovers);

    let admin = AdminService {
        applier: Arc::new(Applier::new(store.clone())),
        store: store.clone(),
        registry: registry.clone(),
    };
    let discovery = DiscoveryService {
        view: view_rx,
        registry,
        store,
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AdminServer<AdminService>>().await;
    health
        .set_serving::<DiscoveryServer<DiscoveryService>>()
        .await;

    tracing::info!(
        addr = %listener.local_addr()?,
        data_dir = %config.data_dir.display(),
        revision = contents.revision,
        "control plane serving"
    );
    tonic::transport::Server::builder()
        // Notice proxies that vanished without closing (a partition, a frozen node).
        .http2_keepalive_interval(Some(Duration::from_secs(15)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(health_service)
        .add_service(AdminServer::new(admin))
        .add_service(DiscoveryServer::new(discovery))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
