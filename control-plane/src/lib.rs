//! weft-control-plane: stores the mesh's resources, streams each proxy its view, and
//! serves the operators' Admin API.
//!
//! # Layout
//! - [`store`]: the `Store` trait and its embedded (redb) implementation.
//! - [`apply`]: validation of admin writes, including checks across resources.
//! - [`view`]: builds the versioned view every proxy is served (stored resources plus
//!   registered workloads), debounced so a burst of writes is one rebuild.
//! - [`discovery`]: the per-proxy delta stream (diffs, nonces, ACK/NACK), and the
//!   self-registration of the proxies' workloads with its grace period.
//! - [`health`]: active health checks of statically declared endpoints.
//! - [`registry`]: connected proxies and their sync state.
//! - [`identity`]: the CA, join tokens, ServiceAccount token reviews and the Identity
//!   service (certificates).
//! - [`kubernetes`]: Kubernetes mode, with the API server as the store.
//! - [`inject`]: sidecar injection: the admission webhook and `weftctl inject`.
//! - [`admin`]: the Admin gRPC service.
//! - [`server`]: wires the parts onto one gRPC port.
//! - [`cli`]: the pure parts of the `weftctl` CLI (documents, tables, output).

#![forbid(unsafe_code)]

pub mod admin;
pub mod apply;
pub mod cli;
pub mod discovery;
pub mod health;
pub mod identity;
pub mod inject;
pub mod kubernetes;
pub mod registry;
pub mod server;
pub mod store;
pub mod view;
