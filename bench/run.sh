#!/usr/bin/env bash
# Builds weft-proxy in release mode and runs the shared loopback benchmark with it
# in the "custom" slot, side by side with direct, HAProxy and nginx.
#
#   bench/run.sh --harness DIR [run.sh options...]
#
# DIR is the shared harness (the folder holding run.sh and setup.sh; run its
# setup.sh once). It can also come from WEFT_BENCH_HARNESS. Every other option is
# passed to the harness's run.sh (e.g. -s h1,h2 -d 5 -r 1).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
harness=${WEFT_BENCH_HARNESS:-}
if [[ ${1:-} == --harness ]]; then harness=$2; shift 2; fi
if [[ -z $harness || ! -x $harness/run.sh ]]; then
  echo "usage: $0 --harness DIR [options]  (DIR: the shared benchmark harness with run.sh)" >&2
  exit 2
fi
cargo build --release -p weft-proxy --manifest-path "$root/Cargo.toml"
target=$(cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
proxy=$target/release/weft-proxy
ports=(22080 22082 22052 22083)
exec "$harness/run.sh" \
  --custom-cmd "$here/custom-weft.sh $proxy ${ports[*]}" \
  --custom-port "${ports[0]}" --custom-h2-port "${ports[1]}" \
  --custom-tcp-port "${ports[2]}" --custom-l4-port "${ports[3]}" \
  "$@"
