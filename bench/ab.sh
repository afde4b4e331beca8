#!/usr/bin/env bash
# Compares two weft-proxy builds and HAProxy on HTTP/1.1 keep-alive in one run:
# wrk rotates over the three, round after round, so that a host whose speed
# drifts (a shared VM) moves all three alike, and each round gives ratios.
#
#   bench/ab.sh [-r ROUNDS] [-d SECONDS] [-s WRK_LUA_SCRIPT] BINARY_A BINARY_B
#
# Same layout as the shared harness: each proxy on CPU 0 with one worker, wrk
# (1 thread, 64 connections) and three bench-upstream servers on CPU 1, weft in
# its benchmark configuration (bench/custom-weft.sh). Prints req/s and proxy CPU
# per request for every run (GETs, or what the wrk script -s makes: bench/post.lua
# sends 1 KiB POSTs), then the per-round ratios to HAProxy and their
# medians. Needs the harness's setup.sh to have run (bench-upstream, wrk,
# haproxy); BENCH_HOME as for the harness (default ~/.cache/weft-bench).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rounds=6 secs=5 script=()
while getopts "r:d:s:" opt; do
  case $opt in
    r) rounds=$OPTARG ;;
    d) secs=$OPTARG ;;
    s) script=(-s "$(realpath "$OPTARG")") ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[[ $# -eq 2 ]] || { echo "usage: $0 [-r ROUNDS] [-d SECONDS] [-s SCRIPT] BINARY_A BINARY_B" >&2; exit 2; }
a=$(realpath "$1") b=$(realpath "$2")
upstream_bin=${BENCH_HOME:-$HOME/.cache/weft-bench}/upstream-target/release/bench-upstream
for tool in wrk haproxy taskset "$upstream_bin"; do
  command -v "$tool" > /dev/null || { echo "missing $tool (run the harness's setup.sh)" >&2; exit 1; }
done
out=$(mktemp -d "${TMPDIR:-/tmp}/weft-ab.XXXXXX")
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
start() { # start LOG CPU CMD...
  local log=$1 cpu=$2; shift 2
  setsid taskset -c "$cpu" "$@" > "$out/$log" 2>&1 < /dev/null &
  pids+=($!)
}
wait_http() {
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done
  echo "nothing answers on port $1 (see $out)" >&2; exit 1
}

upstreams=""
for port in 23101 23102 23103; do
  start "upstream-$port.log" 1 "$upstream_bin" "$port"
  upstreams+="127.0.0.1:$port,"
done
upstreams=${upstreams%,}
cat > "$out/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 8000
defaults
    mode http
    balance roundrobin
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    http-reuse always
frontend fe
    bind 127.0.0.1:23180
    default_backend be
backend be
$(for u in ${upstreams//,/ }; do echo "    server u${u##*:} $u"; done)
EOF
start haproxy.log 0 haproxy -db -f "$out/haproxy.cfg"
# The two builds, each with ports of its own.
run_weft() { # run_weft NAME BINARY BASE
  mkdir -p "$out/$1"
  start "$1.log" 0 env BENCH_OUT="$out/$1" BENCH_UPSTREAMS="$upstreams" BENCH_WORKERS=1 \
    BENCH_IPERF=127.0.0.1:9 BENCH_ADMIN_PORT=$(($3 + 10)) BENCH_OUTBOUND_PORT=$(($3 + 11)) \
    BENCH_INBOUND_PORT=$(($3 + 12)) \
    "$here/custom-weft.sh" "$2" "$3" $(($3 + 1)) $(($3 + 2)) $(($3 + 3))
}
run_weft a "$a" 23200
run_weft b "$b" 23300
for port in 23180 23200 23300; do wait_http "$port"; done

names=(a b haproxy) ports=(23200 23300 23180)
tck=$(getconf CLK_TCK)
pid_on() { ss -ltnpH "sport = :$1" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for i in 0 1 2; do
  taskset -c 1 wrk -t1 -c64 -d1s "${script[@]}" "http://127.0.0.1:${ports[$i]}/" > /dev/null
done
echo "round proxy req/s cpu_us_per_req" | tee "$out/runs.txt"
for round in $(seq "$rounds"); do
  for j in 0 1 2; do
    k=$(( (round + j) % 3 ))
    pid=$(pid_on "${ports[$k]}")
    c0=$(cpu_ticks "$pid")
    rps=$(taskset -c 1 wrk -t1 -c64 -d"${secs}s" "${script[@]}" "http://127.0.0.1:${ports[$k]}/" \
      | awk '/Requests\/sec/ {print $2}')
    c1=$(cpu_ticks "$pid")
    awk -v r="$round" -v n="${names[$k]}" -v q="$rps" -v c=$((c1 - c0)) -v hz="$tck" -v s="$secs" \
      'BEGIN {printf "%d %s %.0f %.2f\n", r, n, q, 1e6 * c / hz / (q * s)}' | tee -a "$out/runs.txt"
  done
done
python3 - "$out/runs.txt" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]).read().split("\n")[1:]:
    if line:
        r, name, rps, cpu = line.split()
        runs.setdefault(r, {})[name] = (float(rps), float(cpu))
for name in ("a", "b"):
    q = [g[name][0] / g["haproxy"][0] for g in runs.values()]
    c = [g[name][1] / g["haproxy"][1] for g in runs.values()]
    print(f"{name} / HAProxy  req/s: median {statistics.median(q):.3f} per round "
          f"{' '.join(f'{x:.2f}' for x in q)}")
    print(f"{name} / HAProxy  CPU/request: median {statistics.median(c):.3f} per round "
          f"{' '.join(f'{x:.2f}' for x in c)}")
PY
echo "runs in $out/runs.txt"
