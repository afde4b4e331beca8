#!/usr/bin/env bash
# The local mesh demo, on the embedded store: a control plane, sidecars registering
# their workloads, the shop's config applied with weftctl, and traffic through the
# mesh. Ctrl-C stops everything it started.
#
#   deploy/demo/run.sh                 # until Ctrl-C
#   deploy/demo/run.sh --duration 20   # stop by itself after 20 s (used by tests)
set -euo pipefail
cd "$(dirname "$0")/../.."

duration=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

for tool in curl python3; do
  command -v "$tool" >/dev/null || {
    echo "installing $tool"; apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null; }
done

echo "== building weft (debug build, shared with the tests)"
cargo build --workspace --bins --quiet
bin=target/debug
state=$(mktemp -d -t weft-demo.XXXXXX)
pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "== stopping the demo"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

start() { # name, command...
  local name=$1; shift
  "$@" >"$state/$name.log" 2>&1 &
  pids+=($!)
}

wait_http() { # url
  for _ in $(seq 1 200); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.05
  done
  echo "timed out waiting for $1" >&2
  return 1
}

cp=127.0.0.1:17010
export WEFT_CONTROL_PLANE=$cp
echo "== control plane on $cp (embedded store in $state/cp)"
start control-plane "$bin/weft-control-plane" --listen "$cp" --data-dir "$state/cp" \
  --registration-grace-ms 2000
for _ in $(seq 1 200); do "$bin/weftctl" status >/dev/null 2>&1 && break; sleep 0.05; done

echo "== weftctl apply -f deploy/demo/mesh.yaml"
"$bin/weftctl" apply -f deploy/demo/mesh.yaml

# Sample workloads: tiny HTTP apps, each behind its own sidecar. The sidecars announce
# themselves, so the control plane makes them endpoints of their services.
app() { # name, port, body
  mkdir -p "$state/www-$1"
  printf '%s\n' "$3" >"$state/www-$1/index.html"
  start "app-$1" python3 -m http.server "$2" --bind 127.0.0.1 --directory "$state/www-$1"
}
sidecar() { # name, service, zone, inbound port, app port, admin port
  start "sidecar-$1" "$bin/weft-proxy" --node-id "$1" --namespace shop --service "$2" \
    --workload-address 127.0.0.1 --workload-port "http=$4" --zone "$3" --region eu-west \
    --inbound "127.0.0.1:$4" --inbound-forward "127.0.0.1:$5" \
    --admin "127.0.0.1:$6" --outbound "127.0.0.1:$(( $6 + 1000 ))"
}
app products-1 18081 '{"service":"products","replica":1}'
app products-2 18082 '{"service":"products","replica":2}'
app orders-1 18091 '{"service":"orders","replica":1}'
sidecar products-1 products eu-west-1a 17101 18081 17201
sidecar products-2 products eu-west-1b 17102 18082 17202
sidecar orders-1 orders eu-west-1a 17111 18091 17211

# The client: an app that reaches services through explicit upstream ports.
start sidecar-frontend "$bin/weft-proxy" --node-id frontend --namespace shop \
  --admin 127.0.0.1:17290 --outbound 127.0.0.1:18290 --inbound 127.0.0.1:17190 \
  --upstream shop/products=127.0.0.1:17301 --upstream shop/orders=127.0.0.1:17302
for admin in 17201 17202 17211 17290; do wait_http "http://127.0.0.1:$admin/ready"; done

echo "== the frontend sidecar's view (/config_dump, endpoints)"
curl -fs http://127.0.0.1:17290/config_dump | python3 deploy/demo/show_endpoints.py

echo "== traffic: the frontend calls products and orders through its sidecar"
ok=0; failed=0; started=$(date +%s); shown=0
while :; do
  for upstream in 17301 17302; do
    if curl -fs -m 2 -o /dev/null "http://127.0.0.1:$upstream/"; then ok=$((ok+1)); else failed=$((failed+1)); fi
  done
  now=$(date +%s)
  if [ $((now - shown)) -ge 3 ]; then
    shown=$now
    echo
    "$bin/weftctl" status
    echo "requests so far: $ok ok, $failed failed; the frontend sidecar counts:"
    curl -fs http://127.0.0.1:17290/metrics | grep -E '^weft_requests_total' | sed 's/^/  /' || true
  fi
  if [ "$duration" -gt 0 ] && [ $((now - started)) -ge "$duration" ]; then break; fi
done
echo
echo "== summary: $ok ok, $failed failed in $(( $(date +%s) - started )) s"
