//! The weft.v1 API and the validated domain types it is converted into.
//!
//! # Layout
//! - [`v1`]: the generated protobuf messages and gRPC services (tonic + prost).
//! - [`model`]: validated domain types (`Service`, `Endpoints`, ...) built from the
//!   messages with `TryFrom`; the only types the control plane's logic and the proxy's
//!   data path see. Validation lives here once and serves both sides.
//! - [`crd`]: Weft's kinds as Kubernetes custom resources (`weft.io/v1alpha1`): their
//!   names, their status, and (feature `schema`) their CRD manifests.
//! - [`document`]: the YAML documents operators write (`kind`, `metadata`, `spec`),
//!   read by `weftctl apply` and by the proxy's `--static-config`.
//! - [`probe`]: the health-check probes (HTTP, gRPC, TCP) the proxy and the control
//!   plane run.
//! - [`resource`]: the type URLs and the `Resource` envelope helpers shared by the
//!   discovery stream and the admin API.
//! - `fuzzing`: the checks the fuzz targets in `proto/fuzz` run, and the replay of
//!   their committed corpus under `cargo test`.

#![forbid(unsafe_code)]

pub mod crd;
pub mod document;
#[doc(hidden)]
pub mod fuzzing;
pub mod model;
pub mod probe;
pub mod resource;

/// Generated code for `package weft.v1`.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod v1 {
    tonic::include_proto!("weft.v1");
}

/// Generated code for `package grpc.health.v1` (the client of gRPC health checks).
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod grpc_health {
    tonic::include_proto!("grpc.health.v1");
}
