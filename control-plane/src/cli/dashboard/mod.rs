//! `weftctl dashboard`: a local web page of the mesh, as `linkerd viz dashboard`
//! or Kiali show one: the service graph (nodes and edges with request rate, success
//! and latency, coloured by success), the golden metrics per service, and a page per
//! proxy (sync state, config version, NACKs, certificate expiry, endpoint states),
//! and a live tap view of the requests the proxies serve.
//!
//! It reads what `weftctl top` and `weftctl status` read, the proxies' `/metrics`
//! and the control plane's list of proxies, once per interval, and serves the
//! result to the page. Nothing runs in the mesh for it.
//!
//! # Layout
//! - [`state`]: the view built each round (pure; unit-tested).
//! - [`server`]: the HTTP server, the page's files, `/api/state` and `/api/tap`.
//! - [`tap`]: the tap view's stream, merged from the proxies' `/tap` as `weftctl
//!   tap` merges them.
//! - `assets/`: the page: HTML, one script, one style sheet.

pub mod server;
pub mod state;
pub mod tap;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::watch;

use self::state::{Dashboard, ProxyMetrics, Round};
use super::client::CliError;
use super::top::run::{scrape_all, unix_now, Targets};
use super::top::{rfc3339, Top};

pub struct Options {
    pub listen: SocketAddr,
    pub namespace: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    /// The proxies' `--tap-token`, for the tap view.
    pub tap_token: Option<String>,
}

/// Serves the dashboard until Ctrl-C.
pub async fn run(mut targets: Targets, options: Options) -> Result<(), CliError> {
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|e| CliError::Input(format!("--listen {}: {e}", options.listen)))?;
    let address = listener
        .local_addr()
        .map_err(|e| CliError::Input(format!("--listen {}: {e}", options.listen)))?;
    let (publish, latest) = watch::channel(Arc::new(Bytes::from_static(b"{}")));
    let (publish_targets, tap_targets) = watch::channel(Arc::new(Vec::new()));
    let sources = server::Sources {
        state: latest,
        targets: tap_targets,
        tap_token: options.tap_token.as_deref().map(Arc::from),
    };
    let published = Published {
        view: publish,
        targets: publish_targets,
    };
    println!("weftctl dashboard on http://{address}/ (Ctrl-C stops it)");
    tokio::select! {
        result = collect(&mut targets, &options, &published) => result,
        () = server::serve(listener, sources) => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Where each round goes: the view as JSON, and the proxies the tap view may tap.
struct Published {
    view: watch::Sender<Arc<Bytes>>,
    targets: watch::Sender<Arc<Vec<tap::Target>>>,
}

/// Each interval: list the proxies, scrape them all at once, publish the view.
async fn collect(
    targets: &mut Targets,
    options: &Options,
    publish: &Published,
) -> Result<(), CliError> {
    let mut top = Top::default();
    let mut dashboard = Dashboard::default();
    let mut ticker = tokio::time::interval(options.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let fixed = match targets {
        Targets::Fixed(list) => list.clone(),
        Targets::ControlPlane { .. } => Vec::new(),
    };
    loop {
        ticker.tick().await;
        let mut unreachable = Vec::new();
        let listed = targets.list(&mut unreachable).await?;
        let round = scrape_all(&listed.targets, options.timeout).await;
        let scraped: BTreeMap<String, Result<ProxyMetrics, String>> = round
            .iter()
            .map(|(target, result)| {
                let metrics = match result {
                    Ok(scraped) => Ok(ProxyMetrics::of(&scraped.samples)),
                    Err(error) => Err(error.clone()),
                };
                (target.clone(), metrics)
            })
            .collect();
        let now = unix_now();
        let mut frame = top.frame(
            rfc3339(now),
            round,
            &listed.sources,
            options.namespace.as_deref(),
        );
        unreachable.append(&mut frame.unreachable);
        frame.unreachable = unreachable;
        let view = dashboard.update(Round {
            frame,
            listed: &listed.proxies,
            control_plane_build: &listed.control_plane_build,
            scraped,
            fixed: &fixed,
            fresh: listed.fresh,
            now_unix_s: now,
        });
        publish
            .targets
            .send_replace(Arc::new(tap::Target::of(&view.proxies)));
        match serde_json::to_vec(&view) {
            Ok(json) => {
                publish.view.send_replace(Arc::new(Bytes::from(json)));
            }
            Err(error) => tracing::warn!(%error, "dashboard state"),
        }
    }
}
