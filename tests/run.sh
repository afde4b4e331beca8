#!/usr/bin/env bash
# The test command: installs what the tests need, checks formatting and lints, builds
# the workspace once, then runs every test (unit, integration and end-to-end; the e2e
# tests start the binaries built here).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages used by the tests as real peers and tools.
packages=(curl nghttp2-client prometheus iptables iproute2 util-linux openssl)
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
# gRPC peers written with another language's library.
if ! python3 -c 'import grpc, grpc_tools' 2>/dev/null; then
  python3 -m pip install --quiet grpcio grpcio-tools
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins --tests
cargo test --workspace
