#!/usr/bin/env bash
# Builds, once, a Prometheus server with Kubernetes service discovery, for the test
# that runs deploy/observability/prometheus/prometheus-kubernetes.yml against the
# test cluster. Debian's prometheus package is built without Kubernetes discovery
# (it refuses `kubernetes_sd_configs`), so this one comes from Prometheus's own Go
# module on the Go module proxy, built with the machine's Go.
#
# Prints the binary's path as its last line on stdout (all else goes to stderr):
#     prometheus=$(tests/scripts/prometheus-binary.sh)
# Cached under ${WEFT_PROMETHEUS_CACHE:-$HOME/.cache/weft-prometheus}/<version>/;
# a second run returns at once.
#
# The module cannot be `go install`ed (its go.mod has exclude directives, which Go
# refuses outside the main module), so the script builds inside a copy of it.
set -euo pipefail

# Prometheus v3.7.3: its Go module is tagged v0.307.3. Its web UI is not embedded
# (that needs the npm build); the HTTP API the test uses is all there.
PROMETHEUS_MODULE_VERSION="${WEFT_PROMETHEUS_VERSION:-v0.307.3}"
cache_root="${WEFT_PROMETHEUS_CACHE:-$HOME/.cache/weft-prometheus}"
dir="$cache_root/$PROMETHEUS_MODULE_VERSION"
binary="$dir/prometheus"

log() { echo "prometheus-binary: $*" >&2; }

if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi

command -v go >/dev/null || { log "the go command is needed to build Prometheus"; exit 1; }
mkdir -p "$dir"
# One build at a time: two test binaries started together both find no cache.
exec 9>"$dir/.lock"
flock 9
if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi

start=$(date +%s)
module_json=$(cd "$dir" && GOFLAGS= go mod download -json "github.com/prometheus/prometheus@$PROMETHEUS_MODULE_VERSION")
module_dir=$(printf '%s\n' "$module_json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$module_dir" ] || { log "no source for github.com/prometheus/prometheus@$PROMETHEUS_MODULE_VERSION: $module_json"; exit 1; }
src="$dir/src"
rm -rf "$src"
cp -r "$module_dir" "$src"
chmod -R u+w "$src"

log "building Prometheus ($PROMETHEUS_MODULE_VERSION) into $dir (a few minutes on 2 cores, once)"
(
  cd "$src"
  export CGO_ENABLED=0
  nice -n 10 go build -mod=mod -trimpath -ldflags "-s -w" -o "$binary.tmp" ./cmd/prometheus
) >&2
mv "$binary.tmp" "$binary"
rm -rf "$src"
log "built in $(($(date +%s) - start)) s: $(du -sh "$binary" | cut -f1)"
echo "$binary"
