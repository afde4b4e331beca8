#!/usr/bin/env bash
# CPU time the proxy spends per request (perf stat task-clock: user and kernel),
# for two or more builds side by side, interleaved, so that a busy machine's load
# falls on every build alike.
#
#   bench/perf-stat.sh [-n REQUESTS] [-r ROUNDS] [-c H1_CONNECTIONS] PROXY_BINARY...
#
# Each round starts every binary in turn (one worker pinned to CPU 0, static
# config, round robin over a local nginx pinned to CPU 1, like bench/callgrind.sh)
# and drives it with h2load on CPU 1: REQUESTS h1 requests (H1_CONNECTIONS
# keep-alive connections, default 4, one request at a time each; 64 keeps the
# proxy busy as the harness's wrk does), then REQUESTS h2c requests (4 connections,
# 16 streams each), after a short warm-up that fills the connection pools. It
# prints one line per binary, round and scenario, then the median and range per
# binary and scenario. Hardware counters (cycles, instructions) are often missing
# in virtual machines, so only task-clock and context switches are read. Needs
# perf, nginx, h2load, curl and taskset.
set -euo pipefail
requests=20000 rounds=5 connections=4
while getopts "n:r:c:" opt; do
  case $opt in
    c) connections=$OPTARG ;;
    n) requests=$OPTARG ;;
    r) rounds=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
(($# > 0)) || { echo "usage: $0 [-n REQUESTS] [-r ROUNDS] [-c H1_CONNECTIONS] PROXY_BINARY..." >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/nginx-upstream.sh
source "$here/nginx-upstream.sh"
out=$(mktemp -d "${TMPDIR:-/tmp}/weft-perf-stat.XXXXXX")
echo "output in $out"

read -r h1_port h2_port http_port h2c_port admin_port outbound_port inbound_port <<< "$(free_ports 7)"
nginx_upstream_conf "$out" "$h1_port" "$h2_port" > "$out/nginx.conf"
taskset -c 1 nginx -c "$out/nginx.conf" -p "$out" > "$out/nginx.out" 2>&1 &
nginx_pid=$!
pid=""
trap 'kill "$nginx_pid" $pid 2>/dev/null || true' EXIT

for name in "http:http1:$h1_port" "h2:http2:$h2_port"; do
  IFS=: read -r service protocol port <<< "$name"
  cat <<DOC
---
kind: Service
metadata: {name: $service, namespace: bench}
spec:
  ports: [{port: 80, protocol: $protocol}]
  loadBalancer: round_robin
---
kind: Endpoints
metadata: {name: $service, namespace: bench}
spec:
  endpoints:
    - {address: 127.0.0.1, port: $port}
DOC
done > "$out/mesh.yaml"

: > "$out/results.txt"
for round in $(seq 1 "$rounds"); do
  for proxy in "$@"; do
    WEFT_DRAIN_DELAY_MS=0 taskset -c 0 "$proxy" --static-config "$out/mesh.yaml" --workers 1 \
      --admin "127.0.0.1:$admin_port" --outbound "127.0.0.1:$outbound_port" \
      --inbound "127.0.0.1:$inbound_port" \
      --upstream "bench/http=127.0.0.1:$http_port" --upstream "bench/h2=127.0.0.1:$h2c_port" \
      --log warn > "$out/proxy.log" 2>&1 &
    pid=$!
    tries=0
    until curl -sf "http://127.0.0.1:$admin_port/ready" > /dev/null; do
      kill -0 "$pid" 2>/dev/null || { echo "proxy exited, see $out/proxy.log" >&2; exit 1; }
      tries=$((tries + 1))
      ((tries < 200)) || { echo "proxy not ready, see $out/proxy.log" >&2; exit 1; }
      sleep 0.1
    done
    for scenario in h1 h2; do
      case $scenario in
        h1) args=(--h1 -c "$connections" -m 1 "http://127.0.0.1:$http_port/") ;;
        h2) args=(-c 4 -m 16 "http://127.0.0.1:$h2c_port/") ;;
      esac
      taskset -c 1 h2load -n 1000 "${args[@]}" > "$out/warm-up.txt"
      # With -p and a command, perf counts the proxy for as long as the command runs.
      perf stat -x, -e task-clock,context-switches -p "$pid" -o "$out/perf.txt" -- \
        taskset -c 1 h2load -n "$requests" "${args[@]}" > "$out/h2load.txt"
      grep -q "$requests succeeded" "$out/h2load.txt" \
        || { echo "not every request succeeded, see $out/h2load.txt" >&2; exit 1; }
      awk -F, -v n="$requests" -v proxy="$proxy" -v s="$scenario" -v r="$round" '
        /task-clock/ {ms = $1} /context-switches/ {cs = $1}
        END {printf "%s %s round %d: %.2f us/request, %.3f context switches/request\n",
             proxy, s, r, ms * 1000 / n, cs / n}' "$out/perf.txt" | tee -a "$out/results.txt"
    done
    kill -TERM "$pid"
    wait "$pid" || true
    pid=""
  done
done

echo "medians (range) over $rounds rounds:"
awk '{key = $1 " " $2; v[key] = v[key] " " $5} END {for (k in v) print k, v[k]}' "$out/results.txt" \
  | sort | while read -r proxy scenario values; do
    sorted=$(tr ' ' '\n' <<< "$values" | sort -g | tr '\n' ' ')
    python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[3].split()]; print(f"{sys.argv[1]} {sys.argv[2]}: {statistics.median(v):.2f} us/request ({min(v):.2f}..{max(v):.2f})")' \
      "$proxy" "$scenario" "$sorted"
  done
