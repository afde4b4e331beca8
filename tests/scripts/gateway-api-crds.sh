#!/usr/bin/env bash
# Fetches, once, the Gateway API's standard CRDs (HTTPRoute, GRPCRoute, Gateway, ...)
# the kubernetes_gateway tests install: they ship inside the Gateway API's Go module, so
# the Go module proxy serves them like the Kubernetes binaries.
#
# Prints the directory of the CRD files as its last line on stdout (all else goes to
# stderr):
#     crds=$(tests/scripts/gateway-api-crds.sh)
# The copy is cached under ${WEFT_K8S_CACHE:-$HOME/.cache/weft-k8s}/gateway-api/<version>;
# a second run returns at once.
set -euo pipefail

# v1.6.3: the newest release the machine's Go 1.26 downloads (v1.7.0's go.mod wants a
# newer Go).
VERSION="${WEFT_GATEWAY_API_VERSION:-v1.6.3}"
cache_root="${WEFT_K8S_CACHE:-$HOME/.cache/weft-k8s}"
dir="$cache_root/gateway-api/$VERSION"

log() { echo "gateway-api-crds: $*" >&2; }

if [ -f "$dir/.complete" ]; then
  echo "$dir"
  exit 0
fi

command -v go >/dev/null || { log "the go command is needed to fetch the Gateway API's CRDs"; exit 1; }
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [ -f "$dir/.complete" ]; then
  echo "$dir"
  exit 0
fi

# Outside any module: `go mod download` of a module@version needs none.
module_json=$(cd "$dir" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/gateway-api@$VERSION")
module_dir=$(printf '%s\n' "$module_json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
standard="$module_dir/config/crd/standard"
[ -d "$standard" ] || { log "no config/crd/standard in sigs.k8s.io/gateway-api@$VERSION: $module_json"; exit 1; }
cp "$standard"/*.yaml "$dir/"
chmod u+w "$dir"/*.yaml
touch "$dir/.complete"
log "the Gateway API $VERSION standard CRDs are in $dir"
echo "$dir"
