#!/usr/bin/env bash
# Builds, once, the real Kubernetes control plane the end-to-end tests run on:
# kube-apiserver, kube-controller-manager and kubectl from one pinned k8s.io/kubernetes
# release, and etcd from the version that release itself requires. Everything comes
# from the Go module proxy and is built with the machine's Go.
#
# Prints the bin directory as its last line on stdout (all else goes to stderr):
#     bin=$(tests/scripts/k8s-binaries.sh)
# The result is cached under ${WEFT_K8S_CACHE:-$HOME/.cache/weft-k8s}/<version>/bin;
# a second run returns at once.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces each staging module
# (k8s.io/api, k8s.io/client-go, ...) with a directory inside its own repository. So the
# script writes a small module of its own that requires k8s.io/kubernetes and replaces
# each of those staging modules with its published v0.<minor>.<patch> build.
set -euo pipefail

# One pinned release. v1.37 is the newest that the machine's Go 1.26 builds without a
# toolchain download (its go.mod says `go 1.26.0`), and k8s-openapi has a v1_37 feature.
K8S_VERSION="${WEFT_K8S_VERSION:-v1.37.2}"
cache_root="${WEFT_K8S_CACHE:-$HOME/.cache/weft-k8s}"
dir="$cache_root/$K8S_VERSION"
bin="$dir/bin"
tools=(kube-apiserver kube-controller-manager kubectl etcd)

log() { echo "k8s-binaries: $*" >&2; }

complete() {
  for t in "${tools[@]}"; do
    [ -x "$bin/$t" ] || return 1
  done
  [ -f "$bin/.complete" ]
}

if complete; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { log "the go command is needed to build the Kubernetes binaries"; exit 1; }
mkdir -p "$dir"
# One build at a time: two test binaries started together both find no cache.
exec 9>"$dir/.lock"
flock 9
if complete; then
  echo "$bin"
  exit 0
fi

start=$(date +%s)
src="$dir/src"
rm -rf "$src" "$bin" "$bin.tmp"
mkdir -p "$src" "$bin.tmp"

# The staging modules and the etcd version come from the release's own go.mod.
kmod_json=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION")
kmod_file=$(printf '%s\n' "$kmod_json" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[ -f "$kmod_file" ] || { log "no go.mod for k8s.io/kubernetes@$K8S_VERSION: $kmod_json"; exit 1; }
staging=$(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#\1#p' "$kmod_file")
[ -n "$staging" ] || { log "no staging replaces found in $kmod_file"; exit 1; }
etcd_version=$(sed -n 's#^[[:space:]]*go\.etcd\.io/etcd/server/v3 \(v[0-9.]*\).*#\1#p' "$kmod_file")
[ -n "$etcd_version" ] || { log "k8s.io/kubernetes@$K8S_VERSION names no go.etcd.io/etcd/server/v3"; exit 1; }
staging_version="v0.${K8S_VERSION#v1.}"

{
  echo "module weft.test/k8s-binaries"
  echo
  echo "go $(sed -n 's/^go \(.*\)/\1/p' "$kmod_file")"
  echo
  echo "require ("
  echo "	k8s.io/kubernetes $K8S_VERSION"
  echo "	go.etcd.io/etcd/server/v3 $etcd_version"
  echo ")"
  echo
  echo "replace ("
  for m in $staging; do
    echo "	$m => $m $staging_version"
  done
  echo ")"
} >"$src/go.mod"

# A staging module missing from the proxy at that version would fail deep inside the
# build; say which one up front.
for m in $staging; do
  if ! (cd "$src" && go list -m -json "$m@$staging_version" >/dev/null 2>&1); then
    log "$m@$staging_version is not published; pick another WEFT_K8S_VERSION"
    exit 1
  fi
done

major=${K8S_VERSION#v}
major=${major%%.*}
minor=${K8S_VERSION#v*.}
minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

log "building Kubernetes $K8S_VERSION and etcd $etcd_version into $bin (about 6 minutes on 2 cores with nothing else running, once)"
(
  cd "$src"
  export CGO_ENABLED=0
  # -mod=mod lets the build fill in go.sum from the module proxy.
  nice -n 10 go build -mod=mod -trimpath -ldflags "$ldflags" -o "$bin.tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl
  nice -n 10 go build -mod=mod -trimpath -ldflags "-s -w" -o "$bin.tmp/etcd" go.etcd.io/etcd/server/v3
) >&2
touch "$bin.tmp/.complete"
mv "$bin.tmp" "$bin"
log "built in $(($(date +%s) - start)) s: $(du -sh "$bin" | cut -f1) in $bin"
echo "$bin"
