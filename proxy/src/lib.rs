//! weft-proxy: the per-pod sidecar.
//!
//! # Layout
//! - [`config`]: flags and `WEFT_*` variables, validated once into [`config::Config`].
//! - [`snapshot`]: the immutable view of the mesh the data path reads.
//! - [`local`]: the local workload, the services (and their ports) the app behind
//!   this proxy serves, from the flags or learned from the snapshot's endpoints.
//! - [`discovery`]: the control-plane client: resolves the control plane (hickory),
//!   keeps one discovery stream, validates each push into a new snapshot, ACKs/NACKs.
//! - [`identity`]: the proxy's certificate, key and trusted roots, and the manager
//!   that obtains and renews them; what the data path builds its mTLS configs from.
//! - [`admin`]: `/live`, `/ready`, `/metrics`, `/config_dump`, `/tap`, `/shutdown`,
//!   served on the control runtime, off the data path.
//! - [`tap`]: the live stream of finished HTTP requests behind `/tap`; one relaxed
//!   load per request while nobody taps.
//! - [`trace`]: a span per hop for services that trace, exported with OTLP/gRPC
//!   from a thread of its own, and the trace context carried on; one relaxed load
//!   per request of a service that does not.
//! - [`access_log`]: JSON lines on stdout for the sampled requests of services
//!   whose access log is on; a bounded queue to one writer thread.
//! - [`record`]: what a tapped or logged request carries to its response's end.
//! - [`drain`]: the shutdown primitive every listener and task watches.
//! - [`shutdown`]: the shutdown sequence (withdraw the endpoint, drain, exit).
//! - [`health`]: the active health check of the proxy's own application.
//! - [`init`]: `weft-proxy init`, the iptables rules that capture the pod's traffic.
//! - [`dataplane`]: the listeners that carry application traffic (outbound,
//!   inbound, explicit upstreams), TCP and HTTP forwarding, on the worker runtime.
//! - [`balance`]: the load-balancing policies (pure logic).
//! - [`resilience`]: retry budget, backoff, outlier detection, circuit breakers,
//!   locality tiers and gRPC deadlines (pure logic the forwarder consults).
//! - [`static_config`]: `--static-config`, the mesh from a file instead of a
//!   control plane.
//! - [`metrics`]: the Prometheus recorder and the handles the data path holds.
//! - [`workers`]: the data-path runtime (current-thread for one worker).
//! - `fuzzing`: the entry points of the fuzz targets in `proxy/fuzz` (docs/fuzzing.md).
//!
//! Two runtimes: a small current-thread one for admin and discovery, and the data-path
//! workers, so that neither can stall the other (DESIGN.md decision 10).

#![deny(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod capture;
pub mod config;
pub mod dataplane;
pub mod discovery;
pub mod drain;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod identity;
pub mod init;
pub mod limits;
pub mod local;
pub mod metrics;
pub mod record;
pub mod resilience;
pub mod shutdown;
pub mod snapshot;
pub mod state;
pub mod static_config;
pub mod tap;
pub mod tls;
pub mod trace;
pub mod workers;
