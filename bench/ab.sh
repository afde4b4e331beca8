#!/usr/bin/env bash
# Compares two weft-proxy builds and HAProxy on HTTP/1.1 keep-alive (or h2c) in
# one run: the load generator rotates over the three, round after round, so that
# a host whose speed drifts (a shared VM) moves all three alike, and each round
# gives ratios.
#
#   bench/ab.sh [-r ROUNDS] [-d SECONDS] [-s WRK_LUA_SCRIPT | -2] BINARY_A BINARY_B
#
# Same layout as the shared harness: each proxy on CPU 0 with one worker, wrk
# (1 thread, 64 connections) and three bench-upstream servers on CPU 1, weft in
# its benchmark configuration (bench/custom-weft.sh). Prints req/s and proxy CPU
# per request for every run (GETs, or what the wrk script -s makes: bench/post.lua
# sends 1 KiB POSTs), then the per-round ratios to HAProxy and their medians.
# -2 measures h2c instead, as the harness's h2 scenario does: h2load (1 thread,
# 8 connections x 16 streams, prior knowledge) to each proxy's h2c listener, h2c
# on to the upstreams. Needs the harness's setup.sh to have run (bench-upstream,
# wrk, h2load, haproxy); BENCH_HOME as for the harness (default
# ~/.cache/weft-bench).
# AB_ENV_A and AB_ENV_B add environment to one build only ("WEFT_BENCH_ROUTES=10"):
# with the same binary twice, they compare two configurations instead of two builds.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rounds=6 secs=5 script=() h2=0
while getopts "r:d:s:2" opt; do
  case $opt in
    r) rounds=$OPTARG ;;
    d) secs=$OPTARG ;;
    s) script=(-s "$(realpath "$OPTARG")") ;;
    2) h2=1 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[[ $# -eq 2 ]] || { echo "usage: $0 [-r ROUNDS] [-d SECONDS] [-s SCRIPT | -2] BINARY_A BINARY_B" >&2; exit 2; }
a=$(realpath "$1") b=$(realpath "$2")
upstream_bin=${BENCH_HOME:-$HOME/.cache/weft-bench}/upstream-target/release/bench-upstream
for tool in wrk h2load haproxy taskset "$upstream_bin"; do
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
frontend fe_h2
    bind 127.0.0.1:23182 proto h2
    default_backend be_h2
backend be
$(for u in ${upstreams//,/ }; do echo "    server u${u##*:} $u"; done)
backend be_h2
$(for u in ${upstreams//,/ }; do echo "    server u${u##*:} $u proto h2"; done)
EOF
start haproxy.log 0 haproxy -db -f "$out/haproxy.cfg"
# The two builds, each with ports of its own.
run_weft() { # run_weft NAME BINARY BASE EXTRA_ENV
  mkdir -p "$out/$1"
  # shellcheck disable=SC2086 # EXTRA_ENV is a list of VAR=value words.
  start "$1.log" 0 env $4 BENCH_OUT="$out/$1" BENCH_UPSTREAMS="$upstreams" BENCH_WORKERS=1 \
    BENCH_IPERF=127.0.0.1:9 BENCH_ADMIN_PORT=$(($3 + 10)) BENCH_OUTBOUND_PORT=$(($3 + 11)) \
    BENCH_INBOUND_PORT=$(($3 + 12)) \
    "$here/custom-weft.sh" "$2" "$3" $(($3 + 1)) $(($3 + 2)) $(($3 + 3))
}
run_weft a "$a" 23200 "${AB_ENV_A:-}"
run_weft b "$b" 23300 "${AB_ENV_B:-}"
for port in 23180 23200 23300; do wait_http "$port"; done

names=(a b haproxy) ports=(23200 23300 23180)
# Each weft build's h2c listener is its HTTP port + 1 (custom-weft.sh's second port).
[[ $h2 == 1 ]] && ports=(23201 23301 23182)
tck=$(getconf CLK_TCK)
pid_on() { ss -ltnpH "sport = :$1" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# load PORT SECONDS: prints req/s and the number of requests answered.
load() {
  local url="http://127.0.0.1:$1/"
  if [[ $h2 == 1 ]]; then
    taskset -c 1 h2load -t1 -c8 -m16 -D "$2" "$url" | awk '
      /finished in/ {rps = $4}
      /^requests:/ {ok = $8; bad = $10 + $12 + $14}
      END {if (bad > 0) print bad " requests failed or errored" > "/dev/stderr"; print rps, ok}'
  else
    taskset -c 1 wrk -t1 -c64 -d"$2s" "${script[@]}" "$url" \
      | awk -v s="$2" '/Requests\/sec/ {print $2, $2 * s}'
  fi
}
for i in 0 1 2; do load "${ports[$i]}" 1 > /dev/null; done
echo "round proxy req/s cpu_us_per_req" | tee "$out/runs.txt"
for round in $(seq "$rounds"); do
  for j in 0 1 2; do
    k=$(( (round + j) % 3 ))
    pid=$(pid_on "${ports[$k]}")
    c0=$(cpu_ticks "$pid")
    read -r rps count < <(load "${ports[$k]}" "$secs")
    c1=$(cpu_ticks "$pid")
    awk -v r="$round" -v n="${names[$k]}" -v q="$rps" -v c=$((c1 - c0)) -v hz="$tck" -v m="$count" \
      'BEGIN {printf "%d %s %.0f %.2f\n", r, n, q, 1e6 * c / hz / m}' | tee -a "$out/runs.txt"
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
