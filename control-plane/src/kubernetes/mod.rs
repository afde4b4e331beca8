//! Kubernetes mode (`weft-control-plane --kubernetes`): the API server is the store,
//! Services and EndpointSlices are the source of the mesh, Weft's kinds are CRDs, and
//! proxies prove their identity with ServiceAccount tokens (DESIGN.md decisions 5, 7,
//! 13). Every replica computes the same view from the same objects, so proxies may
//! connect to any of them.
//!
//! # Layout
//! - [`translate`]: Services, EndpointSlices and Pods to weft Services and Endpoints
//!   (pure).
//! - [`watch`]: a reflector per kind that moves the store's revision.
//! - [`store`]: the `Store` over those caches, and the CA Secret.
//! - [`gateway`]: the Gateway API's HTTPRoute and GRPCRoute as mesh routes (GAMMA):
//!   translation, verdicts per parent.
//! - [`policy`]: the `weft.io` CRDs: validation, verdicts, and writes for `weftctl apply`.
//! - [`lease`]: leadership for the duties done once.
//! - [`status`]: the CRDs' `status.conditions` and the routes' `status.parents`,
//!   written by the leader.

pub mod gateway;
pub mod lease;
pub mod policy;
pub mod status;
pub mod store;
pub mod translate;
pub mod watch;

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

pub use store::{KubeStore, Settings};

/// A client from `--kubeconfig`, or else the usual inference: `$KUBECONFIG`, then the
/// in-cluster ServiceAccount.
pub async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| anyhow::anyhow!("no Kubernetes configuration: {e}"))?,
    };
    Ok(Client::try_from(config)?)
}
