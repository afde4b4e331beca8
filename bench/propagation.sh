#!/usr/bin/env bash
# Config propagation and control-plane memory with 1, 100 and 1,000 simulated proxies.
#
# Builds release and runs control-plane/examples/propagation.rs, which starts the real
# control plane, loads 1,000 services x 10 endpoints, connects the proxies (one TCP
# connection each, all in the benchmark process) and times Admin writes until every
# proxy has the change.
#
# Environment: BENCH_VERBOSE=1 prints every write; BENCH_DEBOUNCE_MS overrides the
# control plane's debounce; BENCH_CONTROL_PLANE_CPU=<n> pins it with taskset.
# Arguments replace the default proxy counts: bench/propagation.sh 1000
set -euo pipefail
cd "$(dirname "$0")/.."

counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 100 1000)
max=0
for n in "${counts[@]}"; do [ "$n" -gt "$max" ] && max=$n; done

# Each proxy holds a socket in this process and one in the control plane's.
need=$((max + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
    ulimit -n "$need" || {
        echo "cannot raise the open-file limit to $need (hard limit $(ulimit -Hn))" >&2
        exit 1
    }
fi

cargo build --release -p weft-control-plane --bins --example propagation
exec target/release/examples/propagation "${counts[@]}"
