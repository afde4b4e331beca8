//! `weft-shop`: the demo shop that runs behind the Weft mesh. One binary, five roles,
//! each a subcommand; the demo starts one process per role (two for orders and
//! products), each next to its own sidecar.
//!
//! # Layout
//! ```text
//! shopper ─┬─HTTP/1.1─▶ users    ◀─HTTP/1.1─ orders
//!          ├─gRPC─────▶ products ◀─gRPC───── cart, orders
//!          ├─HTTP/1.1─▶ cart
//!          └─HTTP/1.1─▶ orders
//! ```
//! - [`users`]: register and look up users (HTTP/1.1 JSON, a leaf).
//! - [`products`]: the catalog over gRPC (`shop.v1.Products`) plus `grpc.health.v1`;
//!   also the gRPC client the others use.
//! - [`cart`]: per-user carts (HTTP/1.1 JSON), checks products by gRPC.
//! - [`orders`]: create, pay, confirm (HTTP/1.1 JSON), calls users and products; the
//!   `Idempotency-Key` header makes its POST safe to retry.
//! - [`shopper`]: the traffic generator, journeys through all four at a steady rate.
//! - [`http`]: the shared HTTP/1.1 bits (server loop, JSON replies, pooled client).
//!
//! # What the services know about the mesh
//! Nothing, except one header: a call that is safe to repeat (a GET, a gRPC read, the
//! keyed checkout POST) carries `weft-retryable: true`, which lets the sidecar retry it
//! even after the request went out. Each service simply calls the `http://HOST:PORT` it
//! was given: a service address captured by iptables, or a sidecar's upstream port.
//! Every response names the replica that served it (`x-served-by`, or `served_by` in
//! gRPC messages), so load balancing and failover can be watched from outside.
//!
//! # Running it by hand, without the mesh
//! ```text
//! weft-shop users    --listen 127.0.0.1:8001 &
//! weft-shop products --listen 127.0.0.1:8002 &
//! weft-shop cart     --listen 127.0.0.1:8003 --products http://127.0.0.1:8002 &
//! weft-shop orders   --listen 127.0.0.1:8004 --users http://127.0.0.1:8001 \
//!                    --products http://127.0.0.1:8002 &
//! weft-shop shopper  --users http://127.0.0.1:8001 --products http://127.0.0.1:8002 \
//!                    --cart http://127.0.0.1:8003 --orders http://127.0.0.1:8004 \
//!                    --rate 5 --duration 10 --summary summary.json
//! ```
//! `deploy/demo/run.sh` starts the same roles, each behind its own sidecar.

#![forbid(unsafe_code)]

mod cart;
mod http;
mod orders;
mod products;
mod propagate;
mod shopper;
mod users;

/// The generated `shop.v1` messages and gRPC service.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
mod proto {
    tonic::include_proto!("shop.v1");
}

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weft-shop",
    about = "The Weft demo shop: four services and a traffic generator"
)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Register and look up users (HTTP/1.1).
    Users(Server),
    /// The product catalog (gRPC, with grpc.health.v1).
    Products(Server),
    /// Create, pay and confirm orders (HTTP/1.1; calls users and products).
    Orders {
        #[command(flatten)]
        server: Server,
        /// The users service, http://HOST:PORT.
        #[arg(long, value_parser = parse_url)]
        users: String,
        /// The products service, http://HOST:PORT.
        #[arg(long, value_parser = parse_url)]
        products: String,
    },
    /// Shopping carts (HTTP/1.1; calls products).
    Cart {
        #[command(flatten)]
        server: Server,
        /// The products service, http://HOST:PORT.
        #[arg(long, value_parser = parse_url)]
        products: String,
    },
    /// Drive shopping journeys through the four services and count what worked.
    /// The traffic: journeys through all four services at a fixed rate.
    Shopper(shopper::Config),
}

#[derive(Args)]
struct Server {
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Name reported in `x-served-by` / `served_by` (default: the hostname).
    #[arg(long, value_name = "NAME")]
    replica: Option<String>,
}

impl Server {
    fn replica(&self) -> String {
        self.replica.clone().unwrap_or_else(hostname)
    }
}

/// The services only speak plain `http://HOST:PORT`; TLS is the sidecars' job.
pub(crate) fn parse_url(text: &str) -> Result<String, String> {
    let uri: hyper::Uri = text
        .parse()
        .map_err(|e| format!("not a URL ({e}); expected http://HOST:PORT"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err("expected http://HOST:PORT".into());
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// A positive number of seconds, such as `20` or `0.5`.
pub(crate) fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err("expected a positive number of seconds".into()),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// How long a stopping server lets requests in flight finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Resolves on SIGTERM or Ctrl-C (SIGINT): every role stops on either and exits 0.
///
/// The handlers are installed when this is called, not when the future is first
/// polled, so a signal that arrives in between still counts (instead of killing the
/// process with the default action).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    let wait = |stream: std::io::Result<Signal>| async move {
        match stream {
            Ok(mut stream) => {
                stream.recv().await;
            }
            // Without a handler the default action (exit) still applies.
            Err(_) => std::future::pending().await,
        }
    };
    async move {
        tokio::select! {
            () = wait(terminate) => {}
            () = wait(interrupt) => {}
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colour only for a person at a terminal, not in the orchestrator's log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.role {
        Role::Users(server) => {
            let listener = http::bind(server.listen).await?;
            http::serve(listener, server.replica(), users::Users::default()).await;
        }
        Role::Products(server) => {
            let listener = http::bind(server.listen).await?;
            products::serve(listener, server.replica()).await?;
        }
        Role::Orders {
            server,
            users,
            products,
        } => {
            let listener = http::bind(server.listen).await?;
            let orders = orders::Orders::new(
                http::Upstream::new(&users),
                products::ProductsApi::new(&products)?,
            );
            http::serve(listener, server.replica(), orders).await;
        }
        Role::Cart { server, products } => {
            let listener = http::bind(server.listen).await?;
            let carts = cart::Carts::new(products::ProductsApi::new(&products)?);
            http::serve(listener, server.replica(), carts).await;
        }
        Role::Shopper(config) => {
            shopper::run(config).await?;
        }
    }
    Ok(())
}
