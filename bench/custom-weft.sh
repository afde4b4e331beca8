#!/usr/bin/env bash
# The Weft proxy in the shared benchmark's "custom" slot, configured statically
# (no control plane): run.sh passes the upstreams, this writes the mesh as the
# YAML weftctl would apply and runs weft-proxy in the foreground with one
# explicit listener per scenario:
#   HTTP port -> service bench/http (http1, round robin over $BENCH_UPSTREAMS)
#   h2c port  -> service bench/h2   (http2, round robin over $BENCH_UPSTREAMS)
#   TCP port  -> service bench/iperf (tcp, the iperf3 server)
#   L4 port   -> service bench/l4   (tcp, round robin over $BENCH_UPSTREAMS)
# Usage (from bench/run.sh): custom-weft.sh PROXY_BINARY HTTP H2C TCP L4
# WEFT_BENCH_RESILIENCE=off turns retries, outlier detection and circuit breakers
# off in every service, to measure what they cost when nothing fails.
# WEFT_BENCH_ROUTES=N attaches N HTTPRoutes to bench/http and N to bench/h2, of which only the last
# (PathPrefix /, below N-1 Exact paths in precedence) matches the benchmark's
# requests: the cost of route selection at its worst for N routes.
# WEFT_BENCH_TRACING=PERCENT turns tracing on for bench/http and bench/h2 at that
# sampling share, exporting to WEFT_BENCH_COLLECTOR (host:port, default
# 127.0.0.1:4317; an unreachable one measures that a dead collector does not slow
# the data path). bench/callgrind.sh starts a receiver for it.
# WEFT_BENCH_ACCESS_LOG=PERCENT turns every service's access log on with that
# sampling share (telemetry.accessLog.samplingPercent); the lines go to the
# proxy's stdout, the harness's log file of it.
# BENCH_ADMIN_PORT, BENCH_OUTBOUND_PORT and BENCH_INBOUND_PORT move the listeners
# the harness does not use (defaults 22090, 22001, 22006).
# WEFT_BENCH_INBOUND=1 measures the inbound path instead on the HTTP port: the
# proxy fronts a workload (service bench/app, its endpoint this port) and forwards
# to the first upstream, as a server-side sidecar does (authorization, the local
# service's protocol and metrics on every request); the other ports are unchanged.
set -euo pipefail
proxy=$1 http=$2 h2=$3 tcp=$4 l4=$5
cfg=$BENCH_OUT/weft-mesh.yaml
extra=""
if [[ ${WEFT_BENCH_RESILIENCE:-on} == off ]]; then
  extra="
  retries: {maxRetries: 0}
  outlierDetection: {consecutiveFailures: 0}
  circuitBreakers: {maxConnections: 4294967295, maxPendingRequests: 4294967295, maxRequests: 4294967295}"
fi
access_log="" tracing=""
if [[ -n ${WEFT_BENCH_ACCESS_LOG:-} ]]; then
  access_log="accessLog: {samplingPercent: $WEFT_BENCH_ACCESS_LOG}"
fi
if [[ -n ${WEFT_BENCH_TRACING:-} ]]; then
  tracing="tracing: {samplingPercent: $WEFT_BENCH_TRACING, collector: '${WEFT_BENCH_COLLECTOR:-127.0.0.1:4317}'}"
fi

endpoints() {
  for u in ${1//,/ }; do echo "    - {address: ${u%:*}, port: ${u##*:}}"; done
}
service() { # name protocol [traced]
  # One telemetry block: every service's access log, and tracing on the traced ones.
  local telemetry=$access_log
  if [[ -n ${3:-} && -n $tracing ]]; then telemetry+="${telemetry:+, }$tracing"; fi
  if [[ -n $telemetry ]]; then telemetry="
  telemetry: {$telemetry}"; fi
  cat <<DOC
---
kind: Service
metadata: {name: $1, namespace: bench}
spec:
  ports: [{port: 80, protocol: $2}]
  loadBalancer: round_robin$extra$telemetry
DOC
}
{
  service http http1 traced; service h2 http2 traced; service iperf tcp; service l4 tcp
  for name in http h2 l4; do
    printf -- '---\nkind: Endpoints\nmetadata: {name: %s, namespace: bench}\nspec:\n  endpoints:\n' "$name"
    endpoints "$BENCH_UPSTREAMS"
  done
  printf -- '---\nkind: Endpoints\nmetadata: {name: iperf, namespace: bench}\nspec:\n  endpoints:\n'
  endpoints "$BENCH_IPERF"
  if [[ ${WEFT_BENCH_INBOUND:-0} == 1 ]]; then
    service app http1
    printf -- '---\nkind: Endpoints\nmetadata: {name: app, namespace: bench}\nspec:\n  endpoints:\n'
    echo "    - {address: 127.0.0.1, port: $http}"
  fi
  routes=${WEFT_BENCH_ROUTES:-0}
  for parent in http h2; do
    for ((i = 1; i <= routes; i++)); do
      path="{type: Exact, value: /miss-$i}"
      if ((i == routes)); then path="{type: PathPrefix, value: /}"; fi
      printf -- '---\nkind: HTTPRoute\nmetadata: {name: %s-r%d, namespace: bench}\n' "$parent" "$i"
      printf -- 'spec:\n  parentRefs: [{name: %s, port: 80}]\n  rules: [{matches: [{path: %s}]}]\n' \
        "$parent" "$path"
    done
  done
} > "$cfg"

listeners=(--inbound "127.0.0.1:${BENCH_INBOUND_PORT:-22006}" --upstream "bench/http=127.0.0.1:$http")
if [[ ${WEFT_BENCH_INBOUND:-0} == 1 ]]; then
  listeners=(--inbound "127.0.0.1:$http" --inbound-forward "${BENCH_UPSTREAMS%%,*}"
             --service app --workload-address 127.0.0.1 --workload-port "http=$http")
fi
exec "$proxy" \
  --static-config "$cfg" \
  --workers "$BENCH_WORKERS" \
  --admin "127.0.0.1:${BENCH_ADMIN_PORT:-22090}" \
  --outbound "127.0.0.1:${BENCH_OUTBOUND_PORT:-22001}" \
  "${listeners[@]}" \
  --upstream "bench/h2=127.0.0.1:$h2" \
  --upstream "bench/iperf=127.0.0.1:$tcp" \
  --upstream "bench/l4=127.0.0.1:$l4" \
  --log warn
