//! Sidecar injection (DESIGN.md decision 13): a mutating admission webhook served by
//! the control plane in Kubernetes mode, and `weftctl inject` for manifests, both
//! running the same pure function on the pod.
//!
//! # Layout
//! - [`settings`]: what the injector adds that is not the pod's business (image,
//!   control plane address, resources): the ConfigMap `weft-injector`, or a file.
//! - [`pod`]: the injection of one pod or pod template (pure).
//! - [`manifests`]: injection as a JSON patch, of a Pod (the webhook) or of every pod
//!   template in YAML documents (`weftctl inject`).
//! - [`source`]: the ConfigMap, watched.
//! - [`certificate`]: the webhook's serving certificate from the mesh CA, and the
//!   `caBundle` of its MutatingWebhookConfiguration kept current.
//! - [`webhook`]: the HTTPS endpoint the API server calls.

pub mod certificate;
pub mod manifests;
pub mod pod;
pub mod settings;
pub mod source;
pub mod webhook;

pub use settings::Settings;
