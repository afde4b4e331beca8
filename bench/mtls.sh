#!/usr/bin/env bash
# mTLS against plaintext on the two-proxy path (client proxy -> server proxy -> app),
# in one run, plus testssl.sh against the STRICT inbound port.
#
#   bench/mtls.sh [-d SECONDS] [-r REPS] [--rate N] [--no-testssl]
#
# Same tools and methods as the shared harness (../shared/bench: run its setup.sh
# once), which cannot be used as is: it has one proxy slot, while this compares two
# configurations of a proxy pair, and mTLS needs a control plane to issue identities.
#   h1       wrk -t1 -c64 --latency, keep-alive             -> req/s
#   h1rate   oha -q RATE --latency-correction (open loop)   -> p50 / p99 from the
#            intended send time
#   connrate wrk -c32 'Connection: close' through a tcp service: every request is a
#            new connection between the proxies, so a new mTLS handshake in the mTLS
#            case                                            -> conn/s, and the
#            handshakes/s the server proxy accepted (its weft_tls_connections_total)
# "direct" is the app without proxies. Repetitions interleave the paths, so the
# ratios compare runs seconds apart. CPU 0: the three proxies (one worker each);
# CPU 1: load generators, the app, the control plane. Results go to $OUT (printed).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
BENCH_HOME=${BENCH_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/weft-bench}
OHA=${OHA:-$BENCH_HOME/tools/bin/oha}
UPSTREAM_BIN=${UPSTREAM_BIN:-$BENCH_HOME/upstream-target/release/bench-upstream}
DURATION=10 REPS=3 RATE=1000 TESTSSL=1 PROXY_CPU=0 LOAD_CPU=1
while [[ $# -gt 0 ]]; do
  case $1 in
    -d) DURATION=$2; shift 2 ;;
    -r) REPS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --no-testssl) TESTSSL=0; shift ;;
    *) echo "usage: $0 [-d SECONDS] [-r REPS] [--rate N] [--no-testssl]" >&2; exit 2 ;;
  esac
done
for tool in wrk taskset curl python3 "$OHA" "$UPSTREAM_BIN"; do
  command -v "$tool" > /dev/null || { echo "missing $tool (run the shared harness's setup.sh)" >&2; exit 69; }
done
[[ $TESTSSL == 0 ]] || command -v testssl > /dev/null \
  || { echo "missing testssl (apt-get install testssl.sh), or pass --no-testssl" >&2; exit 69; }

cargo build --release -p weft-proxy -p weft-control-plane --manifest-path "$root/Cargo.toml"
target=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin=$target/release
OUT=${OUT:-$BENCH_HOME/results/mtls-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT/raw"
load_before=$(uptime)

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done; wait 2> /dev/null || true; }
trap cleanup EXIT
start() { # start NAME CPU COMMAND...
  local name=$1 cpu=$2; shift 2
  taskset -c "$cpu" "$@" > "$OUT/$name.log" 2>&1 < /dev/null &
  pids+=($!)
}
wait_http() { # wait_http URL: until it answers 200 (20 s at most)
  for _ in $(seq 200); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "$1" || true) == 200 ]] && return 0
    sleep 0.1
  done
  echo "no answer from $1; logs in $OUT" >&2; exit 1
}

# Ports (127.0.0.1): app 23081, control plane 23010, client proxy 23100 (plain),
# 23101 (mtls), 23102 (plain tcp), 23103 (mtls tcp); server proxies' inbound 23201
# (plain) and 23202 (mtls); admin ports 2309x.
app=23081 cp=127.0.0.1:23010
start app "$LOAD_CPU" "$UPSTREAM_BIN" "$app"
start control-plane "$LOAD_CPU" "$bin/weft-control-plane" --listen "$cp" \
  --data-dir "$OUT/control-plane" --log warn
ctl() { "$bin/weftctl" --control-plane "$cp" "$@"; }
for _ in $(seq 200); do ctl status > /dev/null 2>&1 && break; sleep 0.1; done
ctl apply -f - > /dev/null << 'YAML'
kind: Service
metadata: {name: plain, namespace: bench}
spec: {ports: [{port: 80, protocol: http1}], mtls: DISABLED}
---
kind: Service
metadata: {name: secure, namespace: bench}
spec: {ports: [{port: 80, protocol: http1}], mtls: STRICT}
---
kind: Service
metadata: {name: plain-tcp, namespace: bench}
spec: {ports: [{port: 80, protocol: tcp}], mtls: DISABLED}
---
kind: Endpoints
metadata: {name: plain-tcp, namespace: bench}
spec: {endpoints: [{address: 127.0.0.1, port: 23201}]}
---
kind: Service
metadata: {name: secure-tcp, namespace: bench}
spec: {ports: [{port: 80, protocol: tcp}], mtls: STRICT}
---
kind: Endpoints
metadata: {name: secure-tcp, namespace: bench}
spec: {endpoints: [{address: 127.0.0.1, port: 23202, identity: "spiffe://cluster.local/ns/bench/sa/secure"}]}
YAML
ctl token create --namespace bench --service-account secure > "$OUT/secure.token" 2> /dev/null
ctl token create --namespace bench --service-account client > "$OUT/client.token" 2> /dev/null

proxy() { # proxy NAME ADMIN_PORT INBOUND_PORT ARGS...
  local name=$1 admin=$2 inbound=$3; shift 3
  start "$name" "$PROXY_CPU" "$bin/weft-proxy" --control-plane "$cp" --node-id "$name" \
    --namespace bench --workers 1 --log warn --admin "127.0.0.1:$admin" \
    --inbound "127.0.0.1:$inbound" --outbound "127.0.0.1:$((admin + 100))" "$@"
}
proxy server-plain 23091 23201 --service plain --workload-address 127.0.0.1 \
  --workload-port 23201 --inbound-forward "127.0.0.1:$app"
proxy server-mtls 23092 23202 --service secure --workload-address 127.0.0.1 \
  --workload-port 23202 --inbound-forward "127.0.0.1:$app" \
  --service-account secure --identity-token-file "$OUT/secure.token"
proxy client 23093 23200 --service-account client --identity-token-file "$OUT/client.token" \
  --upstream bench/plain=127.0.0.1:23100 --upstream bench/secure=127.0.0.1:23101 \
  --upstream bench/plain-tcp=127.0.0.1:23102 --upstream bench/secure-tcp=127.0.0.1:23103
for admin in 23091 23092 23093; do wait_http "http://127.0.0.1:$admin/ready"; done
for port in 23100 23101 23102 23103; do wait_http "http://127.0.0.1:$port/"; done
# The mTLS path must really be mTLS: the server proxy counted the client's handshake.
handshakes() {
  curl -s http://127.0.0.1:23092/metrics | awk '/^weft_tls_connections_total/ && /direction="inbound"/ \
    && /sa\/client"/ {s += $NF} END {print s + 0}'
}
[[ $(handshakes) -ge 1 ]] || { echo "the secure path did not use mTLS" >&2; exit 1; }

if [[ $TESTSSL == 1 ]]; then
  # The inbound requires a client certificate, which testssl (3.0) cannot present:
  # it sees everything up to the server's certificate request (protocols, ciphers,
  # the server's certificate); application-level checks fail, as they should.
  taskset -c "$LOAD_CPU" testssl --quiet --color 0 --warnings off -p -s -E -S -f -U \
    --jsonfile "$OUT/testssl.json" 127.0.0.1:23202 > "$OUT/testssl.txt" 2>&1 || true
fi

record() { echo "$1 $2 $3 $4" >> "$OUT/results.txt"; }  # path scenario metric value
loadgen() { taskset -c "$LOAD_CPU" timeout -k 5 $((DURATION + 30)) "$@"; }
h1() { # h1 PATH PORT REP
  local f=$OUT/raw/h1-$1-$3.wrk
  loadgen wrk -t1 -c64 -d2s "http://127.0.0.1:$2/" > /dev/null 2>&1 || true
  loadgen wrk -t1 -c64 -d "${DURATION}s" --latency "http://127.0.0.1:$2/" > "$f" 2>&1 || true
  record "$1" h1 req_s "$(awk '/^Requests\/sec:/{print $2}' "$f")"
  record "$1" h1 errors "$(awk '/Socket errors|Non-2xx/{n++} END{print n+0}' "$f")"
}
h1rate() { # h1rate PATH PORT REP
  local f=$OUT/raw/h1rate-$1-$3.json
  loadgen "$OHA" --no-tui --output-format json -z "${DURATION}s" -c 16 -q "$RATE" \
    --latency-correction "http://127.0.0.1:$2/" > "$f" 2> "$f.err" || true
  python3 - "$f" "$1" >> "$OUT/results.txt" << 'PY'
import json, sys
d = json.load(open(sys.argv[1])); p = sys.argv[2]; lp = d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
bad = sum(v for k, v in codes.items() if not k.startswith("2")) + sum(d.get("errorDistribution", {}).values())
print(p, "h1rate achieved_req_s", round(d["summary"]["requestsPerSec"], 1))
print(p, "h1rate p50_ms", round(lp["p50"] * 1000, 3))
print(p, "h1rate p99_ms", round(lp["p99"] * 1000, 3))
print(p, "h1rate errors", bad)
PY
}
connrate() { # connrate PATH PORT REP
  local f=$OUT/raw/connrate-$1-$3.wrk before after
  before=$(handshakes)
  loadgen wrk -t1 -c32 -d "${DURATION}s" -H 'Connection: close' "http://127.0.0.1:$2/" > "$f" 2>&1 || true
  after=$(handshakes)
  record "$1" connrate conn_s "$(awk '/^Requests\/sec:/{print $2}' "$f")"
  [[ $1 != mtls ]] || record "$1" connrate server_handshakes_s "$(( (after - before) / DURATION ))"
}

paths_h1=("direct $app" "plain 23100" "mtls 23101")
paths_tcp=("plain 23102" "mtls 23103")
for rep in $(seq "$REPS"); do
  # Alternate the order so that neither path always runs first in a repetition.
  order=("${paths_h1[@]}"); ((rep % 2 == 0)) && order=("mtls 23101" "plain 23100" "direct $app")
  for entry in "${order[@]}"; do h1 $entry "$rep"; done
  for entry in "${order[@]}"; do h1rate $entry "$rep"; done
  for entry in "${paths_tcp[@]}"; do connrate $entry "$rep"; done
  echo "rep $rep done" >&2
done
for admin in 23091 23092 23093; do curl -s "http://127.0.0.1:$admin/metrics" > "$OUT/metrics-$admin.txt"; done

python3 - "$OUT" "$RATE" "$load_before" "$(uptime)" "$TESTSSL" << 'PY' | tee "$OUT/summary.md"
import collections, re, statistics, sys
out, rate, before, after, testssl = sys.argv[1:6]
loadavg = lambda text: text.split("load average:")[-1].strip()
values = collections.defaultdict(list)
for line in open(f"{out}/results.txt"):
    path, scenario, metric, value = line.split()
    if value not in ("", "null"):
        values[(path, scenario, metric)].append(float(value))
def med(path, scenario, metric):
    v = values.get((path, scenario, metric))
    return statistics.median(v) if v else float("nan")
print(f"mTLS vs plaintext, two proxies (client -> server -> app), medians of {len(values[('mtls', 'h1', 'req_s')])} reps")
print(f"load average (1, 5, 15 min) before the run: {loadavg(before)}; after: {loadavg(after)}\n")
print("| metric | direct | plaintext | mTLS | mTLS / plaintext |")
print("|---|---|---|---|---|")
def show(value, form):
    return "-" if value != value else format(value, form)
for label, scenario, metric, form in [
    ("h1 keep-alive, req/s", "h1", "req_s", ",.0f"),
    (f"h1 @{rate} req/s p50, ms", "h1rate", "p50_ms", ".3f"),
    (f"h1 @{rate} req/s p99, ms", "h1rate", "p99_ms", ".3f"),
    ("new connection per request (tcp service), conn/s", "connrate", "conn_s", ",.0f"),
]:
    d, p, m = (med(x, scenario, metric) for x in ("direct", "plain", "mtls"))
    cells = [show(d, form)]
    for path, value in (("plain", p), ("mtls", m)):
        v = values.get((path, scenario, metric)) or [float("nan")]
        cells.append(f"{show(value, form)} ({show(min(v), form)}..{show(max(v), form)})")
    print(f"| {label} | {' | '.join(cells)} | {m / p:.2f}x |")
hs = med("mtls", "connrate", "server_handshakes_s")
print(f"\nmTLS handshakes accepted by the server proxy: {hs:,.0f}/s (one worker)")
print(f"added p99 at {rate} req/s: mTLS - plaintext {med('mtls','h1rate','p99_ms') - med('plain','h1rate','p99_ms'):.3f} ms, "
      f"mTLS pair - direct {med('mtls','h1rate','p99_ms') - med('direct','h1rate','p99_ms'):.3f} ms")
errors = {" ".join(k[:2]): int(sum(v)) for k, v in values.items() if k[2] == "errors" and sum(v) > 0}
print(f"errors (oha counts requests cut off by its deadline): {errors or 'none'}")
if testssl == "1":
    print("\ntestssl.sh against the STRICT inbound port (full output: testssl.txt):\n```")
    keep = re.compile(r"^ (SSLv|TLS 1|NPN|ALPN|NULL|Anonymous|Export|LOW|Triple|Obsolete|Strong|PFS|Elliptic| x13|Signature Algorithm|Server key size|Chain of trust|Certificate Validity|Trust \(hostname\)|Your OpenSSL)")
    for line in open(f"{out}/testssl.txt"):
        if keep.match(line):
            print(line.rstrip())
    print("```")
PY
echo "results: $OUT" >&2
