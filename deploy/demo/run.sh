#!/usr/bin/env bash
# The local mesh demo: a shop of four services (users, products, orders, cart) and a
# shopper driving traffic, each behind its own weft-proxy sidecar, on a control plane
# with the embedded store. mTLS STRICT between every pair, authorization by identity,
# and a live `weftctl top` table refreshed every second.
#
#   deploy/demo/run.sh                     # until Ctrl-C
#   deploy/demo/run.sh --chaos             # also kill a replica every 20 s, then bring it back
#   deploy/demo/run.sh --duration 20       # stop by itself after 20 s
#   deploy/demo/run.sh --no-capture        # explicit upstream ports instead of iptables capture
#   deploy/demo/run.sh --summary-dir DIR   # keep a JSON summary and each sidecar's last /metrics
#   deploy/demo/run.sh --no-build          # use the binaries already in target/debug
#   deploy/demo/run.sh --bin-dir DIR       # use the binaries in DIR (implies --no-build)
#   deploy/demo/run.sh --release           # an optimised build (slower to build, faster to run)
#   deploy/demo/run.sh --observe           # also Prometheus (127.0.0.1:19090) and weftctl dashboard (:50750)
#
# As root with iptables, each service runs in its own network namespace and
# `weft-proxy init` captures its traffic: the apps call the services' virtual IPs
# and never name a proxy. Otherwise everything runs on 127.0.0.1 and the apps call
# their sidecar's explicit upstream ports. Everything started is stopped on exit;
# a run also removes what an interrupted earlier run left behind.
set -euo pipefail
cd "$(dirname "$0")/../.."

duration=0 chaos=0 capture=auto summary_dir="" build=1 bin="" profile=debug observe=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --chaos) chaos=1; shift ;;
    --no-capture) capture=no; shift ;;
    --summary-dir) summary_dir="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --bin-dir) bin="$2"; build=0; shift 2 ;;
    --release) profile=release; shift ;;
    --observe) observe=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$duration" in ''|*[!0-9]*) echo "run.sh: --duration takes whole seconds" >&2; exit 2 ;; esac
started_ms=$(date +%s%3N)

# One demo per machine: its namespaces and run directory have fixed names, so a run
# finds whatever an interrupted one left and removes it first.
PREFIX=weft-demo
run_dir="${TMPDIR:-/tmp}/$PREFIX"
PROXY_UID=1337

install_missing() { # command:package ...
  local missing=()
  for pair in "$@"; do command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "run.sh: needs ${missing[*]} (apt-get install ${missing[*]})" >&2; exit 1
  fi
  echo "== installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}
install_missing curl:curl python3:python3
if [ "$capture" = auto ]; then
  if [ "$(id -u)" = 0 ]; then
    install_missing ip:iproute2 iptables:iptables setpriv:util-linux
    if ip netns add "$PREFIX-probe" 2>/dev/null && ip netns del "$PREFIX-probe"; then
      capture=yes
    else
      capture=no; echo "== cannot create network namespaces here: using explicit upstream ports"
    fi
  else
    capture=no; echo "== not root: no iptables capture, using explicit upstream ports"
  fi
fi

if [ "$observe" = 1 ]; then
  install_missing prometheus:prometheus
  [ "$capture" = yes ] && install_missing socat:socat
  # The dashboard's tap view taps the sidecars from the control plane's network
  # namespace, not their loopback: they ask for this run's token, which both read
  # from the environment.
  WEFT_TAP_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  export WEFT_TAP_TOKEN
fi

if [ "$build" = 1 ]; then
  if [ "$profile" = release ]; then
    echo "== building weft (release build)"
    cargo build --release --workspace --bins --quiet
  else
    echo "== building weft (debug build, shared with the tests)"
    # The same targets as tests/run.sh builds: the tests' dependencies turn on
    # tokio's test-util, and a build of the binaries alone would rebuild every
    # crate above tokio without it, and the tests' build again after it.
    cargo build --workspace --bins --tests --quiet
  fi
fi
[ -n "$bin" ] || bin="$(pwd)/${CARGO_TARGET_DIR:-target}/$profile"
for b in weft-control-plane weft-proxy weftctl weft-shop; do
  [ -x "$bin/$b" ] || { echo "run.sh: $bin/$b is missing (drop --no-build)" >&2; exit 1; }
done

# --- leftovers of an interrupted run, then our own teardown -----------------------
netns_list() { ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX-" || true; }
remove_netns() { # name: kill what runs inside (it would keep it alive), then delete
  local pids; pids=$(ip netns pids "$1" 2>/dev/null || true)
  [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
  ip netns del "$1" 2>/dev/null || true
}
sweep() {
  if [ -f "$run_dir/pids" ]; then
    while read -r pid; do
      # Only processes of this demo: their command line names its run directory or binaries.
      if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -q -e "$run_dir" -e "$bin/weft"; then
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done <"$run_dir/pids"
  fi
  if command -v ip >/dev/null; then
    for ns in $(netns_list); do remove_netns "$ns"; done
  fi
  rm -rf "$run_dir"
}
sweep
mkdir -p "$run_dir/pods"

chaos_pid=""
teardown() {
  trap - EXIT INT TERM
  [ -n "$chaos_pid" ] && kill "$chaos_pid" 2>/dev/null || true
  echo "== stopping the demo"
  local pids=()
  [ -f "$run_dir/pids" ] && mapfile -t pids <"$run_dir/pids"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # Sidecars drain (--drain-delay-ms 0 here, then in-flight requests) and exit.
  for _ in $(seq 1 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  sweep
  echo "== stopped: no process, namespace or rule of the demo is left"
}
trap teardown EXIT
# What a failed step printed, when it printed to a log.
trap '[ -f "$run_dir/setup.log" ] && tail -5 "$run_dir/setup.log" >&2' ERR
trap 'exit 130' TERM

# Starts a process in the background, in a session of its own so that the terminal's
# Ctrl-C reaches only the script, which then stops everything in order.
spawn() { # log-name command...
  local log="$run_dir/$1.log"; shift
  setsid "$@" >"$log" 2>&1 </dev/null &
  last_pid=$!
  disown "$last_pid" # the teardown stops it; no job report when it is killed
  echo "$last_pid" >>"$run_dir/pids"
}

wait_until() { # description, command... : polls for up to 30 s
  local what=$1; shift
  for _ in $(seq 1 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "run.sh: timed out waiting for $what" >&2
  return 1
}

# --- the pods ----------------------------------------------------------------------
# Each pod: the service it serves ("-" for the shopper, which only calls), its zone,
# and its address under capture. orders and products have a replica in each zone.
pods=(users products-1 products-2 cart orders-1 orders-2 shopper)
declare -A service=(
  [users]=users [products-1]=products [products-2]=products [cart]=cart
  [orders-1]=orders [orders-2]=orders [shopper]=-)
declare -A zone=(
  [users]=eu-west-1a [products-1]=eu-west-1a [products-2]=eu-west-1b [cart]=eu-west-1a
  [orders-1]=eu-west-1a [orders-2]=eu-west-1b [shopper]=-)
declare -A address=(
  [users]=10.77.0.11 [products-1]=10.77.0.21 [products-2]=10.77.0.22 [cart]=10.77.0.41
  [orders-1]=10.77.0.31 [orders-2]=10.77.0.32 [shopper]=10.77.0.51)
declare -A vip=([users]=10.96.0.10 [products]=10.96.0.11 [orders]=10.96.0.12 [cart]=10.96.0.13)
# Without capture every pod gets a block of ports on 127.0.0.1: +0 app, +1 inbound,
# +2 admin, +3 outbound, then one explicit upstream port per service.
declare -A block upstream_offset=([users]=4 [products]=5 [orders]=6 [cart]=7)
i=0; for pod in "${pods[@]}"; do block[$pod]=$((17100 + 10 * i)); i=$((i + 1)); done

if [ "$capture" = yes ]; then
  cp_addr=10.77.0.2:15010
  cp_prefix=(ip netns exec "$PREFIX-control-plane")
  # The pods' network: a bridge in a namespace of its own, each pod on it by a veth
  # pair. Nothing in the host's own namespace changes.
  lan=$PREFIX-lan
  ip netns add "$lan"
  ip -n "$lan" link add br0 type bridge
  ip -n "$lan" link set br0 up
  ports=0
  attach() { # namespace, address
    ip netns add "$1"
    ip -n "$1" link set lo up
    ip -n "$lan" link add "port$ports" type veth peer name eth0 netns "$1"
    ip -n "$lan" link set "port$ports" master br0 up
    ip -n "$1" addr add "$2/24" dev eth0
    ip -n "$1" link set eth0 up
    # A pod's default route: a virtual IP must be routable to reach the OUTPUT chain.
    ip -n "$1" route add default dev eth0
    ports=$((ports + 1))
  }
  attach "$PREFIX-control-plane" "${cp_addr%:*}"
else
  cp_addr=127.0.0.1:17010
  cp_prefix=()
fi
ctl() { "${cp_prefix[@]}" "$bin/weftctl" --control-plane "$cp_addr" "$@"; }
# The command prefix that runs something inside a pod (its namespace under capture).
pod_prefix() { if [ "$capture" = yes ]; then echo "ip netns exec $PREFIX-$1"; fi; }

echo "== control plane on $cp_addr, embedded store in $run_dir/control-plane"
spawn control-plane "${cp_prefix[@]}" "$bin/weft-control-plane" --listen "$cp_addr" \
  --data-dir "$run_dir/control-plane" --registration-grace-ms 2000
wait_until "the control plane" ctl status

echo "== weftctl apply -f deploy/demo/shop.yaml -f deploy/demo/routes.yaml"
ctl apply -f deploy/demo/shop.yaml
ctl apply -f deploy/demo/routes.yaml

# A service's URL as a pod's app uses it: the virtual IP under capture (the app does
# not know a proxy exists), else its own sidecar's explicit port for that service.
url() { # pod, service
  if [ "$capture" = yes ]; then echo "http://${vip[$2]}:80"
  else echo "http://127.0.0.1:$(( block[$1] + upstream_offset[$2] ))"; fi
}
app_port() { if [ "$capture" = yes ]; then echo 8080; else echo "${block[$1]}"; fi; }

app_args() { # pod: the shop binary's arguments for it
  local pod=$1 listen
  listen="127.0.0.1:$(app_port "$1")"
  case "${service[$pod]}" in
    users|products) echo "${service[$pod]} --listen $listen --replica $pod" ;;
    cart) echo "cart --listen $listen --replica $pod --products $(url "$pod" products)" ;;
    orders) echo "orders --listen $listen --replica $pod --users $(url "$pod" users)" \
                 "--products $(url "$pod" products)" ;;
    -) echo "shopper --rate 10 --users $(url "$pod" users) --products $(url "$pod" products)" \
            "--orders $(url "$pod" orders) --cart $(url "$pod" cart) --summary $run_dir/shopper.json" ;;
  esac
}

sidecar_args() { # pod: its sidecar's arguments
  local pod=$1 svc=${service[$1]} account=${service[$1]} port_name=http base=${block[$1]}
  [ "$svc" = - ] && account=$pod
  [ "$svc" = products ] && port_name=grpc
  local args=(--node-id "$pod" --namespace shop --service-account "$account"
    --identity-token-file "$run_dir/pods/$pod/token" --state-dir "$run_dir/pods/$pod/state"
    --control-plane "$cp_addr" --drain-delay-ms 0 --workers 1)
  [ "$svc" != - ] && args+=(--service "$svc" --region eu-west --zone "${zone[$pod]}")
  if [ "$capture" = yes ]; then
    # Defaults otherwise: outbound 127.0.0.1:15001, inbound 0.0.0.0:15006, as `init` expects.
    args+=(--admin 0.0.0.0:15020 --admin-advertise "${address[$pod]}:15020")
    [ "$svc" != - ] && args+=(--workload-address "${address[$pod]}" --workload-port "$port_name=8080")
  else
    args+=(--admin "127.0.0.1:$((base + 2))" --outbound "127.0.0.1:$((base + 3))"
      --inbound "127.0.0.1:$((base + 1))" --inbound-forward "127.0.0.1:$base")
    for s in users products orders cart; do
      args+=(--upstream "shop/$s=127.0.0.1:$((base + upstream_offset[$s]))")
    done
    [ "$svc" != - ] && args+=(--workload-address 127.0.0.1 --workload-port "$port_name=$((base + 1))")
  fi
  echo "${args[@]}"
}

admin_of() { # pod -> its sidecar's admin address, as reached from the control plane
  if [ "$capture" = yes ]; then echo "${address[$1]}:15020"; else echo "127.0.0.1:$((block[$1] + 2))"; fi
}
ready() { "${cp_prefix[@]}" curl -fs -o /dev/null "http://$(admin_of "$1")/ready"; }
app_listening() { # pod: its app accepts connections
  # shellcheck disable=SC2046
  $(pod_prefix "$1") bash -c "exec 3<>/dev/tcp/127.0.0.1/$(app_port "$1")"
}

declare -A app_pid sidecar_pid
start_app() {
  # shellcheck disable=SC2046
  spawn "$1-app" $(pod_prefix "$1") "$bin/weft-shop" $(app_args "$1")
  app_pid[$1]=$last_pid
}
start_sidecar() {
  # Under capture the proxy runs as its own UID, which `weft-proxy init` exempts.
  local as_proxy=()
  [ "$capture" = yes ] && as_proxy=(setpriv --reuid "$PROXY_UID" --regid "$PROXY_UID" --clear-groups)
  # shellcheck disable=SC2046
  spawn "$1-sidecar" $(pod_prefix "$1") "${as_proxy[@]}" "$bin/weft-proxy" $(sidecar_args "$1")
  sidecar_pid[$1]=$last_pid
}
# A pod starts as in Kubernetes: the app, then its sidecar, which registers the
# endpoint once it is up, so no caller is sent to a port nobody listens on.
start_pod() {
  start_app "$1"
  wait_until "$1's app" app_listening "$1"
  start_sidecar "$1"
}

# --- observability (--observe) ------------------------------------------------------
# Prometheus with deploy/observability's config and rules, scraping every sidecar's
# admin port, and `weftctl dashboard`. Both run beside the control plane (in its
# namespace under capture, where the pods are reachable); the host reaches them on
# 127.0.0.1:19090 and 127.0.0.1:50750 either way.
prometheus_port=19090 dashboard_port=50750
# forward NAME PORT ADDRESS: the host's 127.0.0.1:PORT to ADDRESS in the control
# plane's namespace (-L names the run directory, so a later run's sweep knows it).
forward() {
  spawn "$1-forward" socat -L "$run_dir/$1-forward.lock" \
    "TCP-LISTEN:$2,bind=127.0.0.1,reuseaddr,fork" \
    "EXEC:ip netns exec $PREFIX-control-plane socat STDIO TCP\:${3%:*}\:${3##*:}"
}
start_observability() {
  local obs="$run_dir/observability" listen targets=""
  mkdir -p "$obs/prometheus/targets"
  cp deploy/observability/prometheus/prometheus-demo.yml "$obs/prometheus/"
  cp -r deploy/observability/rules "$obs/rules"
  for pod in "${pods[@]}"; do
    targets+="{\"targets\": [\"$(admin_of "$pod")\"], \"labels\": {\"pod\": \"$pod\"}},"
  done
  echo "[${targets%,}]" >"$obs/prometheus/targets/demo.json"
  listen=127.0.0.1:$prometheus_port
  [ "$capture" = yes ] && listen=${cp_addr%:*}:9090
  spawn prometheus "${cp_prefix[@]}" prometheus \
    --config.file "$obs/prometheus/prometheus-demo.yml" --storage.tsdb.path "$obs/data" \
    --web.listen-address "$listen" --web.enable-lifecycle
  [ "$capture" = yes ] && forward prometheus "$prometheus_port" "$listen"
  listen=127.0.0.1:$dashboard_port
  [ "$capture" = yes ] && listen=${cp_addr%:*}:$dashboard_port
  spawn dashboard "${cp_prefix[@]}" "$bin/weftctl" --control-plane "$cp_addr" \
    dashboard --listen "$listen" --namespace shop
  [ "$capture" = yes ] && forward dashboard "$dashboard_port" "$listen"
  if ! wait_until "Prometheus" curl -fs "http://127.0.0.1:$prometheus_port/-/ready" ||
     ! wait_until "the dashboard" curl -fs "http://127.0.0.1:$dashboard_port/api/state"; then
    tail -n 5 "$run_dir"/prometheus*.log "$run_dir"/dashboard*.log >&2
    exit 1
  fi
  echo "== Prometheus on http://127.0.0.1:$prometheus_port (${#pods[@]} sidecars; rules and alerts from deploy/observability/rules)"
  echo "== dashboard on http://127.0.0.1:$dashboard_port (weftctl dashboard)"
}

for pod in "${pods[@]}"; do
  account=${service[$pod]}; [ "$account" = - ] && account=$pod
  mkdir -p "$run_dir/pods/$pod/state"
  # The token is on stdout; its id and a reminder on stderr, kept in the log.
  ctl token create --namespace shop --service-account "$account" --ttl 24h \
    >"$run_dir/pods/$pod/token" 2>>"$run_dir/setup.log"
  chmod 0400 "$run_dir/pods/$pod/token"
  if [ "$capture" = yes ]; then
    chown -R "$PROXY_UID:$PROXY_UID" "$run_dir/pods/$pod"
    attach "$PREFIX-$pod" "${address[$pod]}"
    ip netns exec "$PREFIX-$pod" "$bin/weft-proxy" init --proxy-uid "$PROXY_UID" >>"$run_dir/setup.log" 2>&1
  fi
done
if [ "$capture" = yes ]; then
  echo "== 7 pods: network namespaces on one bridge, traffic captured by weft-proxy init"
else
  echo "== 7 pods on 127.0.0.1 (no capture: the apps call their sidecar's upstream ports)"
fi
for pod in "${pods[@]}"; do [ "$pod" = shopper ] || start_pod "$pod"; done
start_sidecar shopper
for pod in "${pods[@]}"; do wait_until "$pod's sidecar" ready "$pod" || exit 1; done
mesh_ready_ms=$(date +%s%3N)
[ "$observe" = 1 ] && start_observability
start_app shopper
echo "== the shop is up after $(( (mesh_ready_ms - started_ms) / 1000 )) s; the shopper starts 10 journeys/s"
# --- chaos ---------------------------------------------------------------------------
kill_pod() { # pod: SIGKILL its app and sidecar, as a node failure would
  if [ "$capture" = yes ]; then
    local pids; pids=$(ip netns pids "$PREFIX-$1")
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
  else
    kill -KILL "${app_pid[$1]}" "${sidecar_pid[$1]}" 2>/dev/null || true
  fi
}
if [ "$chaos" = 1 ]; then
  (
    victims=(orders-2 products-1)
    round=0
    sleep 6
    while :; do
      victim=${victims[$((round % 2))]}
      echo "$(date +%T) chaos: SIGKILL ${victim} (app and sidecar)" | tee -a "$run_dir/chaos.log"
      kill_pod "$victim"
      sleep 6
      start_pod "$victim" >/dev/null
      wait_until "$victim's sidecar" ready "$victim"
      echo "$(date +%T) chaos: ${victim} is back" | tee -a "$run_dir/chaos.log"
      echo "$victim ${app_pid[$victim]} ${sidecar_pid[$victim]}" >"$run_dir/restarted-$victim"
      round=$((round + 1))
      sleep 14
    done
  ) &
  chaos_pid=$!
fi

# --- watching it ---------------------------------------------------------------------
# Ctrl-C ends the table (weftctl exits 0 on it); the script goes on to the summary.
trap ':' INT
top_args=(top --namespace shop --interval 1s)
[ "$duration" -gt 0 ] && top_args+=(--count "$duration")
ctl "${top_args[@]}" || true
trap 'exit 130' INT
[ -n "$chaos_pid" ] && { kill "$chaos_pid" 2>/dev/null || true; wait "$chaos_pid" 2>/dev/null || true; chaos_pid=""; }

# --- the summary -----------------------------------------------------------------------
# The shopper finishes its journeys in flight and writes its counts.
kill -TERM "${app_pid[shopper]}" 2>/dev/null || true
wait_until "the shopper's summary" test -s "$run_dir/shopper.json" || true
declare -A peak
for pod in "${pods[@]}"; do
  pid=${sidecar_pid[$pod]}
  if [ -f "$run_dir/restarted-$pod" ]; then read -r _ _ pid <"$run_dir/restarted-$pod"; fi
  # VmHWM: the most resident memory the process ever had; null for a sidecar the
  # chaos killed and the run ended before restarting.
  peak[$pod]=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo null)
  if [ -n "$summary_dir" ]; then
    mkdir -p "$summary_dir/metrics"
    "${cp_prefix[@]}" curl -fs "http://$(admin_of "$pod")/metrics" >"$summary_dir/metrics/$pod.prom" || true
  fi
done
peaks=""
for pod in "${!peak[@]}"; do peaks+="\"$pod\": ${peak[$pod]:-null}, "; done
python3 - "$run_dir/shopper.json" "$started_ms" "$mesh_ready_ms" "$capture" "{${peaks%, }}" \
  "$run_dir/chaos.log" "${summary_dir:-}" <<'EOF'
import json, os, sys
shopper_file, started, ready, capture, peaks, chaos_log, summary_dir = sys.argv[1:]
try:
    shopper = json.load(open(shopper_file))
except (OSError, ValueError) as e:
    shopper = {"error": "no shopper summary: %s" % e}
chaos = open(chaos_log).read().splitlines() if os.path.exists(chaos_log) else []
first = shopper.get("first_success_unix_ms")
summary = {
    "capture": capture == "yes",
    "journeys": shopper.get("journeys"),
    "calls": shopper.get("calls"),
    "orders_by_replica": shopper.get("orders_by_replica"),
    "seconds_to_mesh_ready": (int(ready) - int(started)) / 1000,
    "seconds_to_first_success": None if first is None else (first - int(started)) / 1000,
    "sidecar_peak_rss_kib": json.loads(peaks),
    "chaos": chaos,
}
print("== summary")
j = summary["journeys"] or {}
print("  shopper journeys: %s ok, %s failed" % (j.get("ok"), j.get("failed")))
for service, c in sorted((summary["calls"] or {}).items()):
    print("  calls to %-9s %6s ok, %s failed" % (service + ":", c.get("ok"), c.get("failed")))
print("  orders by replica: %s" % summary["orders_by_replica"])
print("  first successful journey %.1f s after the command started (mesh ready after %.1f s)"
      % (summary["seconds_to_first_success"] or -1, summary["seconds_to_mesh_ready"]))
print("  sidecar peak RSS (MiB): " + ", ".join(
    "%s %.1f" % (p, kib / 1024) if kib else "%s (not running)" % p
    for p, kib in sorted(summary["sidecar_peak_rss_kib"].items())))
for line in chaos:
    print("  " + line)
if summary_dir:
    json.dump(summary, open(os.path.join(summary_dir, "summary.json"), "w"), indent=2)
EOF
