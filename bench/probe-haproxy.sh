#!/usr/bin/env bash
# The HTTP/1.1 edge probe (tests/src/probe) against weft-proxy and HAProxy side by
# side: both forward to the same strict recorder (run by weft-probe), and
# weft-probe prints one Markdown table with a column pair per proxy.
#
#   bench/probe-haproxy.sh [--out FILE]
#
# Installs HAProxy with apt-get when it is missing. Both proxies get the same
# timeouts (PROBE_TIMEOUT_MS, default 1000): idle/head, request body and upstream
# response; weft-proxy's last two need --request-body-timeout-ms and
# --response-idle-timeout-ms, passed when the binary knows them. Ports: 8 from
# PROBE_PORT_BASE (default 24100).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
out=""
if [[ ${1:-} == --out ]]; then out=$2; shift 2; fi
timeout_ms=${PROBE_TIMEOUT_MS:-1000}
base=${PROBE_PORT_BASE:-24100}
recorder=$base weft=$((base + 1)) admin=$((base + 2)) outbound=$((base + 3))
inbound=$((base + 4)) haproxy_port=$((base + 5))

if ! command -v haproxy >/dev/null; then
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo=sudo
  $sudo apt-get update -q
  $sudo apt-get install -y -q haproxy
fi

cargo build -q -p weft-proxy -p weft-e2e --bin weft-proxy --bin weft-probe \
  --manifest-path "$root/Cargo.toml"
target=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin=$target/debug

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/mesh.yaml" <<YAML
kind: Service
metadata: {name: web, namespace: probe}
spec:
  ports: [{port: 80, protocol: http1}]
  loadBalancer: round_robin
  timeouts: {idleMs: $timeout_ms}
  retries: {maxRetries: 0}
  outlierDetection: {consecutiveFailures: 0}
---
kind: Endpoints
metadata: {name: web, namespace: probe}
spec:
  endpoints:
    - {address: 127.0.0.1, port: $recorder}
YAML
timeouts=()
if "$bin/weft-proxy" --help | grep -q -- --request-body-timeout-ms; then
  timeouts+=(--request-body-timeout-ms "$timeout_ms")
fi
if "$bin/weft-proxy" --help | grep -q -- --response-idle-timeout-ms; then
  timeouts+=(--response-idle-timeout-ms "$timeout_ms")
fi
"$bin/weft-proxy" --static-config "$work/mesh.yaml" --workers 1 \
  --admin "127.0.0.1:$admin" --outbound "127.0.0.1:$outbound" --inbound "127.0.0.1:$inbound" \
  --upstream "probe/web=127.0.0.1:$weft" --log error "${timeouts[@]}" >"$work/weft.log" 2>&1 &
pids+=($!)

# HAProxy as a new user would set it up for this: HTTP mode, keep-alive on both
# sides, no retries, the same timeouts.
cat >"$work/haproxy.cfg" <<CFG
global
  maxconn 4096
defaults
  mode http
  retries 0
  timeout connect 1s
  timeout http-request ${timeout_ms}ms
  timeout client ${timeout_ms}ms
  timeout server ${timeout_ms}ms
  timeout http-keep-alive ${timeout_ms}ms
frontend probe
  bind 127.0.0.1:$haproxy_port
  default_backend recorder
backend recorder
  server recorder 127.0.0.1:$recorder
CFG
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=($!)

for port in "$admin" "$haproxy_port"; do
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
done
echo "weft-proxy timeouts: idleMs $timeout_ms ${timeouts[*]:-(no body/response timeout flags in this build)}" >&2
"$bin/weft-probe" --recorder "127.0.0.1:$recorder" --timeouts-ms "$timeout_ms" \
  --proxy "weft=127.0.0.1:$weft,live=127.0.0.1:$admin" \
  --proxy "haproxy=127.0.0.1:$haproxy_port" | tee ${out:+"$out"}
