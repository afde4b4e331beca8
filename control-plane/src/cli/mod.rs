//! The pure parts of `weftctl` (the binary is `src/bin/weftctl.rs`): everything here
//! is testable without a control plane.
//!
//! # Layout
//! - [`document`]: the YAML documents of `apply` and `get -o yaml|json`, to and from
//!   the weft.v1 messages (in `weft-proto`, since the proxy's `--static-config`
//!   reads the same format).
//! - [`resources`]: how `get` prints resources (table, YAML, JSON).
//! - [`status`]: how `status` prints the connected proxies.
//! - [`identity`]: how `token list` and `ca ...` print.
//! - [`table`]: a tiny aligned-column table.
//! - [`top`]: `top`'s live per-service golden metrics from the proxies' `/metrics`.
//! - [`tap`]: `tap`'s live requests from the proxies' `/tap` streams.
//! - [`check`]: `check`'s verdicts on a cluster running Weft.
//! - [`explain`]: `explain`'s account of one request: route, backends, policy, endpoints.
//! - [`client`]: the control-plane address, the Admin connection, and `weftctl`'s errors.

pub mod check;
pub mod client;
pub mod dashboard;
pub mod explain;
pub use weft_proto::document;
pub mod identity;
pub mod resources;
pub mod status;
pub mod table;
pub mod tap;
pub mod top;

/// Output formats of `get` and `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Yaml,
    Json,
}
