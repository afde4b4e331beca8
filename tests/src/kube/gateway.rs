//! The Gateway API's standard CRDs on the test cluster: Weft's routes on Kubernetes are
//! its HTTPRoute and GRPCRoute. The files come from `$WEFT_GATEWAY_API_CRDS`
//! (tests/run.sh sets it) or, when that is unset, from running
//! `tests/scripts/gateway-api-crds.sh` (cached after its first run).

use std::path::PathBuf;

use anyhow::Result;

use super::Cluster;

/// The directory of the standard CRDs' YAML files.
pub fn crds_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("WEFT_GATEWAY_API_CRDS") {
        return Ok(PathBuf::from(dir));
    }
    super::run_script("gateway-api-crds.sh")
}

/// `kubectl apply`s the standard CRDs and waits until HTTPRoute and GRPCRoute are
/// served.
pub fn install_gateway_api(cluster: &Cluster) {
    let dir = crds_dir().unwrap_or_else(|e| panic!("the Gateway API's CRDs: {e:#}"));
    cluster.kubectl_ok(&[
        "apply",
        "--server-side",
        "-f",
        dir.to_str().expect("utf-8 path"),
    ]);
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/httproutes.gateway.networking.k8s.io",
        "crd/grpcroutes.gateway.networking.k8s.io",
    ]);
}
