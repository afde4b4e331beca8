#!/usr/bin/env bash
# Counts the proxy's user-space instructions per request under callgrind, which,
# unlike req/s, repeats to within about 1% on a busy machine.
#
#   bench/callgrind.sh [-n REQUESTS] [-b PROXY_BINARY] [h1|h2 ...]
#
# The proxy runs as in the benchmark's custom slot (bench/custom-weft.sh: static
# config, one worker), under valgrind, in front of an nginx that answers every
# request with a small static body (HTTP/1.1 keep-alive, or h2c). h2load drives
# REQUESTS requests (default 20,000) over 4 connections: one at a time per
# connection for h1, 16 streams per connection for h2. Each scenario is a second
# run after a run that only starts and stops the proxy; the report is
# (run - startup) / REQUESTS, leaving out quanta's clock calibration (it loops on
# the clock for a fixed time, so its count varies). WEFT_BENCH_RESILIENCE=off,
# WEFT_BENCH_ROUTES and WEFT_BENCH_ACCESS_LOG are honoured as by custom-weft.sh, and so
# is WEFT_BENCH_TRACING=PERCENT: without WEFT_BENCH_COLLECTOR a real OTLP receiver
# (tests/scripts/otlp_receiver.py, Python grpcio and opentelemetry-proto) takes the
# spans, so their export is counted too (callgrind counts every thread). Profiles stay in the output
# directory for callgrind_annotate. Needs valgrind, nginx, h2load and curl.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=bench/nginx-upstream.sh
source "$here/nginx-upstream.sh"
requests=20000 proxy=""
while getopts "n:b:" opt; do
  case $opt in
    n) requests=$OPTARG ;;
    b) proxy=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
scenarios=("${@:-h1}")
if [[ -z $proxy ]]; then
  cargo build --release -p weft-proxy --manifest-path "$root/Cargo.toml"
  target=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  proxy=$target/release/weft-proxy
fi
out=$(mktemp -d "${TMPDIR:-/tmp}/weft-callgrind.XXXXXX")
echo "profiles in $out"
read -r h1_port h2_port http_port h2c_port tcp_port l4_port admin_port outbound_port inbound_port \
  <<< "$(free_ports 9)"

nginx_upstream_conf "$out" "$h1_port" "$h2_port" > "$out/nginx.conf"
nginx -c "$out/nginx.conf" -p "$out" > "$out/nginx.out" 2>&1 &
nginx_pid=$!
receiver_pid=""
trap 'kill "$nginx_pid" $receiver_pid 2>/dev/null || true' EXIT
if [[ -n ${WEFT_BENCH_TRACING:-} && -z ${WEFT_BENCH_COLLECTOR:-} ]]; then
  python3 "$root/tests/scripts/otlp_receiver.py" "$out/spans.jsonl" > "$out/receiver.port" &
  receiver_pid=$!
  until [[ -s $out/receiver.port ]]; do sleep 0.1; done
  export WEFT_BENCH_COLLECTOR=127.0.0.1:$(cat "$out/receiver.port")
fi

cat > "$out/valgrind-proxy.sh" <<'WRAP'
#!/usr/bin/env bash
exec valgrind --tool=callgrind --callgrind-out-file="$CALLGRIND_OUT" "$WEFT_PROXY" "$@"
WRAP
chmod +x "$out/valgrind-proxy.sh"

# Total instructions of a profile, less quanta's calibration loop.
instructions() {
  local total calibration
  total=$(awk '/^totals:/ {print $2}' "$1")
  calibration=$(callgrind_annotate --inclusive=yes "$1" 2>/dev/null \
    | awk '/quanta::Calibration::calibrate \[/ {gsub(",", "", $1); print $1; exit}')
  echo $((total - ${calibration:-0}))
}

# run NAME UPSTREAM_PORT [h2load arguments...]: one proxy under callgrind.
run() {
  local name=$1 upstream=$2
  shift 2
  export BENCH_OUT=$out BENCH_UPSTREAMS=127.0.0.1:$upstream BENCH_IPERF=127.0.0.1:$upstream
  export BENCH_WORKERS=1 WEFT_DRAIN_DELAY_MS=0 WEFT_PROXY=$proxy CALLGRIND_OUT=$out/callgrind.$name
  export BENCH_ADMIN_PORT=$admin_port BENCH_OUTBOUND_PORT=$outbound_port BENCH_INBOUND_PORT=$inbound_port
  "$here/custom-weft.sh" "$out/valgrind-proxy.sh" "$http_port" "$h2c_port" "$tcp_port" "$l4_port" \
    > "$out/proxy.$name.log" 2>&1 &
  local pid=$!
  local tries=0
  until curl -sf "http://127.0.0.1:$admin_port/ready" > /dev/null; do
    tries=$((tries + 1))
    if ((tries > 240)); then
      echo "proxy not ready, see $out/proxy.$name.log" >&2
      kill "$pid"
      exit 1
    fi
    sleep 0.5
  done
  if (($# > 0)); then
    h2load "$@" > "$out/h2load.$name.txt"
    grep -q "$requests succeeded" "$out/h2load.$name.txt" \
      || { echo "not every request succeeded, see $out/h2load.$name.txt" >&2; exit 1; }
  fi
  kill -TERM "$pid"
  wait "$pid" || true
}

for scenario in "${scenarios[@]}"; do
  case $scenario in
    h1)
      run "$scenario-startup" "$h1_port"
      run "$scenario" "$h1_port" --h1 -n "$requests" -c 4 -m 1 "http://127.0.0.1:$http_port/"
      ;;
    h2)
      run "$scenario-startup" "$h2_port"
      run "$scenario" "$h2_port" -n "$requests" -c 4 -m 16 "http://127.0.0.1:$h2c_port/"
      ;;
    *) echo "unknown scenario $scenario (h1, h2)" >&2; exit 2 ;;
  esac
  startup=$(instructions "$out/callgrind.$scenario-startup")
  total=$(instructions "$out/callgrind.$scenario")
  echo "$scenario: $(((total - startup) / requests)) instructions per request"
done
if [[ -n $receiver_pid ]]; then
  echo "spans received: $(wc -l < "$out/spans.jsonl" 2>/dev/null || echo 0)"
fi
