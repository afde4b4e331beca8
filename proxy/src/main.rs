//! `weft-proxy`: parse the configuration once, then run the control runtime (admin and
//! discovery) on its own thread and the data path on the worker runtime.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use weft_proxy::config::{Args, Config};
use weft_proxy::state::{ConfigSource, Shared};
use weft_proxy::{
    admin, dataplane, discovery, drain::Drain, health, identity, limits, metrics, shutdown,
    static_config, workers::Workers,
};

/// hyper allocates per request (heads, header maps, body frames); jemalloc's
/// thread caches make that cheaper than glibc malloc at a small idle footprint.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // `weft-proxy init` writes the pod's iptables rules and exits (init/mod.rs).
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "init") {
        return weft_proxy::init::main(std::env::args_os().skip(1));
    }
    let config = match Config::from_args(Args::parse()) {
        Ok(config) => config,
        Err(errors) => {
            for e in errors {
                eprintln!("weft-proxy: {e}");
            }
            return ExitCode::from(64);
        }
    };
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log))
        .init();
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut config: Config) -> anyhow::Result<()> {
    match limits::raise_open_files() {
        Ok((before, after)) if before != after => {
            tracing::info!(?before, ?after, "open files limit raised to the hard limit");
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "open files limit not raised"),
    }
    let max_connections = *config
        .max_connections
        .get_or_insert_with(limits::connection_limit);
    tracing::info!(max_connections, "downstream connection limit");
    let settings = dataplane::Settings {
        request_body_timeout: config.request_body_timeout,
        max_connections,
        debug_headers: config.debug_headers,
        ..dataplane::Settings::default()
    };
    let metrics = metrics::install()?;
    let worker_count = match config.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let static_snapshot = match &config.static_config {
        Some(path) => Some(static_config::load(path)?),
        None => None,
    };
    let shared = Shared::new(config);
    // The data-path listeners are bound before the admin port answers, so `/live`
    // means every listener is up, and a port that is taken stops the proxy at once.
    let (workers, listeners) = Workers::start(worker_count, async {
        dataplane::Listeners::bind(
            &shared.config.outbound,
            &shared.config.inbound,
            &shared.config.upstreams,
        )
        .await
        .map(|listeners| listeners.with_settings(settings))
    })?;
    // Tasks are spawned through a handle so the runtime itself stays out here and is
    // shut down after the control runtime returns (dropping it inside an async
    // context would panic).
    let data_handle = workers.handle().clone();
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("weft-control")
        .build()?;
    control.block_on(async move {
        let drain = Drain::new();
        let (shutdown_tx, mut shutdown_rx) = tokio::sync::mpsc::channel(1);
        let listener = tokio::net::TcpListener::bind(shared.config.admin).await?;
        tracing::info!(addr = %listener.local_addr()?, "admin listening");
        tokio::spawn(metrics::upkeep(metrics.clone(), drain.watch()));
        let admin = Arc::new(admin::Admin {
            shared: shared.clone(),
            metrics,
            shutdown: shutdown_tx,
        });
        tokio::spawn(admin::serve(listener, admin, drain.watch()));
        let mut data_path = data_handle.spawn(listeners.serve(shared.clone(), drain.watch()));
        match static_snapshot {
            Some(snapshot) => {
                shared.snapshot.send_replace(Arc::new(snapshot));
                shared
                    .configured
                    .store(true, std::sync::atomic::Ordering::Release);
                shared.set_source(ConfigSource::StaticFile);
            }
            None => {
                let restored = discovery::restore(&shared);
                tokio::spawn(discovery::run(shared.clone(), drain.watch(), restored));
                tokio::spawn(health::run(shared.clone(), drain.watch()));
            }
        }
        // Does nothing without an identity token.
        tokio::spawn(identity::manager::run(shared.clone(), drain.watch()));
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM: draining"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: draining"),
            _ = shutdown_rx.recv() => tracing::info!("/shutdown: draining"),
            ended = &mut data_path => match ended {
                Ok(Err(e)) => return Err(e),
                _ => anyhow::bail!("the data path stopped unexpectedly"),
            },
        }
        shutdown::run(&shared, drain).await;
        anyhow::Ok(())
    })?;
    // Everything has drained; tasks still parked (idle pooled connections) go.
    workers.shutdown();
    Ok(())
}
