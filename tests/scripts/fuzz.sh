#!/usr/bin/env bash
# Runs the fuzz targets (cargo-fuzz, libFuzzer, nightly Rust) one after another,
# each for SECONDS (default 600) on its committed corpus, and prints executions,
# exec/s, corpus size and findings per target. Inputs that reach new code are
# merged into the corpus, which is then minimised (`cargo fuzz cmin`) so that it
# stays small: commit it, as `cargo test` replays it on stable.
#
#   tests/scripts/fuzz.sh [SECONDS] [TARGET...]     TARGET: request_head, model, ...
#
# Environment: FUZZ_KEEP=0 leaves the corpus untouched (the CI smoke);
# FUZZ_SANITIZER=address builds with AddressSanitizer (default none: the code
# fuzzed is safe Rust, and ASan halves the rate); FUZZ_NICE (default 10).
# A finding is saved under <crate>/fuzz/artifacts/<target>/ and stops that target;
# replay it with `cargo +nightly fuzz run <target> <file>` in the crate's directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

seconds=${1:-600}
shift || true
keep=${FUZZ_KEEP:-1}
sanitizer=${FUZZ_SANITIZER:-none}
niceness=${FUZZ_NICE:-10}
all=(proxy:request_head proxy:response_head proxy:chunked_body proto:document proto:model)

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: needs a nightly toolchain (rustup toolchain install nightly)" >&2
  exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: needs cargo-fuzz (cargo install cargo-fuzz)" >&2
  exit 2
fi

targets=()
for entry in "${all[@]}"; do
  if [ $# -eq 0 ] || printf '%s\n' "$@" | grep -qx "${entry#*:}"; then
    targets+=("$entry")
  fi
done
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz.sh: no target among: ${all[*]#*:}" >&2
  exit 2
fi

# One target directory for both crates, so that weft-proto is built once.
target_dir=$root/target/fuzz
logs=$target_dir/logs
mkdir -p "$logs"
build=(--sanitizer "$sanitizer" --target-dir "$target_dir")

for crate in proxy proto; do
  if printf '%s\n' "${targets[@]}" | grep -q "^$crate:"; then
    echo "building the $crate fuzz targets"
    (cd "$crate" && nice -n "$niceness" cargo +nightly fuzz build "${build[@]}")
  fi
done

summary=()
failed=0
for entry in "${targets[@]}"; do
  crate=${entry%%:*}
  name=${entry#*:}
  corpus=$root/$crate/fuzz/corpus/$name
  seeds=$root/$crate/fuzz/seeds/$name
  mkdir -p "$corpus"
  artifacts=$root/$crate/fuzz/artifacts/$name
  found=$(mktemp -d)
  mkdir -p "$artifacts"
  before=$(find "$artifacts" -type f | wc -l)
  log=$logs/$name.log
  echo "fuzzing $name for ${seconds}s (log: ${log#"$root"/})"
  # New inputs go to the first directory; the corpus and the seeds are only read.
  status=0
  (cd "$crate" && nice -n "$niceness" cargo +nightly fuzz run "${build[@]}" "$name" \
    "$found" "$corpus" "$seeds" -- -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$artifacts/") >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  findings=$(($(find "$artifacts" -type f | wc -l) - before))
  if [ "$status" -ne 0 ] || [ "$findings" -gt 0 ]; then
    failed=1
    grep -m1 -E "panicked at|ERROR: libFuzzer|SUMMARY" "$log" || tail -5 "$log"
  fi
  if [ "$keep" = 1 ] && [ "$status" -eq 0 ]; then
    cp -n "$found"/* "$corpus"/ 2>/dev/null || true
    # Edges only (no hit counts, no comparison operands): a tenth of the files.
    (cd "$crate" && nice -n "$niceness" cargo +nightly fuzz cmin "${build[@]}" "$name" "$corpus" \
      -- -use_counters=0 -use_cmp=0) >"$logs/$name.cmin.log" 2>&1
  fi
  rm -rf "$found"
  size="$(find "$corpus" -type f | wc -l) files, $(du -sk --apparent-size "$corpus" | cut -f1) KiB"
  summary+=("$(printf '%-14s %6ss %12s %8s/s  %-22s %s' "$name" "$seconds" "${runs:-?}" \
    "${rate:-?}" "$size" "$findings finding(s), exit $status")")
done

printf '\n%-14s %7s %12s %10s  %-22s %s\n' target time executions rate corpus findings
printf '%s\n' "${summary[@]}"
exit "$failed"
