//! In-process integration tests of the data path: the real listeners and
//! forwarding code on loopback `:0` ports, a snapshot published as the discovery
//! client would, real upstream servers, and real clients (hyper, curl, h2load,
//! Python grpcio, promtool). One test binary, so the crate links once.

mod balancing;
mod edge;
mod grpc;
mod h2_streams;
mod h2_upstream_faults;
mod http1;
mod http2;
mod resilience;
mod support;
mod tcp;
mod telemetry;
mod upstream_faults;
