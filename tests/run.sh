#!/usr/bin/env bash
# The test command: installs what the tests need, checks formatting and lints, builds
# the workspace once, then runs every test (unit, integration and end-to-end; the e2e
# tests start the binaries built here).
set -euo pipefail
cd "$(dirname "$0")/.."
# The build and the Kubernetes binaries need several GB; say how much there is, so a
# run that dies of a full disk says so at its top.
echo "disk: $(df -h . | awk 'NR==2 {print $4 " free of " $2}')"

# Debian packages used by the tests as real peers and tools.
packages=(curl nghttp2-client prometheus socat chromium iptables iproute2 util-linux openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: missing packages ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# gRPC peers written with another language's library, and the OTLP trace receiver
# of the tracing test (the OpenTelemetry project's published protos).
if ! python3 -c 'import grpc, grpc_tools, opentelemetry.proto' 2>/dev/null; then
  python3 -m pip install --quiet grpcio grpcio-tools opentelemetry-proto
fi

# The Kubernetes manifests against the API schemas of a pinned Kubernetes version
# (installs kubernetes-validate, and kubectl to render kustomizations, when missing).
tests/scripts/validate-manifests.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins --tests
# A short run of each fuzz target (docs/fuzzing.md): coverage-guided, under the
# nightly toolchain this kind of machine ships with, cargo-fuzz installed from
# crates.io when missing. Building the targets costs a few minutes; each then runs
# for WEFT_FUZZ_SMOKE_SECONDS (15). `cargo test` above already replays the
# committed corpus through the same checks on stable. WEFT_FUZZ_SMOKE=0 skips it;
# without a nightly toolchain it is skipped with a note (a toolchain is never
# downloaded).
if [ "${WEFT_FUZZ_SMOKE:-1}" = 0 ]; then
  echo "fuzz smoke skipped (WEFT_FUZZ_SMOKE=0)"
elif ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz smoke skipped: no nightly toolchain (see docs/fuzzing.md)"
else
  if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install --quiet --locked cargo-fuzz
  fi
  FUZZ_KEEP=0 tests/scripts/fuzz.sh "${WEFT_FUZZ_SMOKE_SECONDS:-15}"
fi

# The real Kubernetes control plane of the kubernetes_* tests (etcd, kube-apiserver,
# kube-controller-manager, kubectl): built once from the Go module proxy (about
# about 6 minutes on 2 cores with nothing else running, 4.4 GB of Go caches), then cached.
WEFT_K8S_BIN="$(tests/scripts/k8s-binaries.sh)"
export WEFT_K8S_BIN
# The Gateway API's standard CRDs (HTTPRoute, GRPCRoute), from its Go module, cached.
WEFT_GATEWAY_API_CRDS="$(tests/scripts/gateway-api-crds.sh)"
export WEFT_GATEWAY_API_CRDS
# Prometheus with Kubernetes discovery (Debian's has none), for the test of the
# Kubernetes scrape config: built once from Prometheus's Go module, then cached.
WEFT_PROMETHEUS="$(tests/scripts/prometheus-binary.sh)"
export WEFT_PROMETHEUS

cargo test --workspace
