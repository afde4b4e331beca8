//! Validated domain types of the mesh's resources.
//!
//! Every message that crosses an edge (an admin write, a discovery response) is
//! converted once with `TryFrom` into these types; a failure names the field and the
//! reason. Nothing past the edge handles a proto type or re-checks a value.

mod address;
mod authorization;
mod directory;
mod endpoints;
mod error;
mod health_check;
mod identity;
mod name;
mod resilience;
pub mod route;
mod service;
mod telemetry;
#[cfg(test)]
mod tests;

pub use address::validate_host_port;
pub use authorization::{decide, AuthorizationPolicy, Decision, DefaultAction, IdentityPattern};
pub use directory::{host_key, Directory, Target};
pub use endpoints::{Endpoint, Endpoints, Health, Locality, DRAINING_LABEL};
pub use error::Invalid;
pub use health_check::{HealthCheck, Probe};
pub use identity::{SpiffeId, TrustBundle, TrustDomain, TRUST_BUNDLE_NAME, TRUST_BUNDLE_NAMESPACE};
pub use name::{validate_label, ResourceName};
pub use resilience::{
    CircuitBreakers, LocalityPolicy, OutlierDetection, Resilience, Retries, RetryOn, Timeouts,
};
pub use route::{GrpcRoute, HttpRoute};
pub use service::{MtlsMode, PolicyName, Protocol, Service, ServicePort};
pub use telemetry::{AccessLog, Sampling, Telemetry, Tracing};
