//! Weft's kinds as Kubernetes custom resources: group `weft.io`, version `v1alpha1`,
//! the names the API server knows them by, and their `status`.
//!
//! On Kubernetes the API server is Weft's store (DESIGN.md, decision 7): the control
//! plane watches these objects, validates each with the same rules as every other
//! store, and reports the outcome in `status.conditions`.
//!
//! # Layout
//! - this file: the group, the version and the two kinds' names.
//! - [`status`]: `status.observedGeneration` and the `Accepted` condition.
//! - `structural` (feature `schema`): turns a schemars JSON schema into a Kubernetes
//!   *structural* schema.
//! - `manifests` (feature `schema`): the CustomResourceDefinitions, rendered from the
//!   document types, as committed in `deploy/kubernetes/base/crds.yaml`.

#[cfg(feature = "schema")]
mod manifests;
pub mod status;
#[cfg(feature = "schema")]
mod structural;
#[cfg(all(test, feature = "schema"))]
mod tests;

#[cfg(feature = "schema")]
pub use manifests::{crd_manifests, crds_yaml};
pub use status::{Condition, ConditionStatus, CrdStatus};
#[cfg(feature = "schema")]
pub use structural::{structural, NotStructural};

pub const GROUP: &str = "weft.io";
pub const VERSION: &str = "v1alpha1";
/// The `apiVersion` of every Weft object.
pub const API_VERSION: &str = "weft.io/v1alpha1";

/// The names of one kind, as its CRD declares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrdKind {
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
}

impl CrdKind {
    /// The CRD's own name, `<plural>.<group>`.
    pub fn crd_name(&self) -> String {
        format!("{}.{GROUP}", self.plural)
    }
}

/// The policy of the Kubernetes Service of the same name in the same namespace; its
/// spec is [`crate::document::ServicePolicySpec`].
pub const SERVICE_POLICY: CrdKind = CrdKind {
    kind: "ServicePolicy",
    plural: "servicepolicies",
    singular: "servicepolicy",
    short_names: &["wsp"],
};

/// Which callers may reach a service; its spec is
/// [`crate::document::AuthorizationPolicySpec`].
pub const AUTHORIZATION_POLICY: CrdKind = CrdKind {
    kind: "AuthorizationPolicy",
    plural: "authorizationpolicies",
    singular: "authorizationpolicy",
    short_names: &[],
};
