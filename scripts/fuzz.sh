#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time each, installing cargo-fuzz first if
# it is missing. The committed inputs (fuzz/corpus/<target> and fuzz/regressions/<target>)
# seed each run; what the run finds new goes to a scratch folder, so the tree stays clean.
# A crash stops the script with the target's name; libFuzzer saves the input under
# fuzz/artifacts/<target>/ (commit it under fuzz/regressions/<target>/ with the fix).
#
#   scripts/fuzz.sh                  # each target for 20 s
#   scripts/fuzz.sh --time 300       # each target for 5 minutes
#   scripts/fuzz.sh --time 60 json   # only the json target
#
# cargo fuzz needs a nightly compiler; on a stable toolchain RUSTC_BOOTSTRAP=1 lets it use
# the nightly flags (-Zsanitizer and the like) of the installed stable compiler.
set -euo pipefail

time_each=20
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --time) time_each="$2"; shift 2 ;;
    --time=*) time_each="${1#--time=}"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2
fi

if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(cargo fuzz list)
fi

# No AddressSanitizer: jetflow's code has no unsafe code of its own, and without it the
# build is faster and each run reaches further in the same time.
flags=(--sanitizer none --release --debug-assertions --codegen-units 16)
echo "fuzz: building ${targets[*]}"
cargo fuzz build "${flags[@]}"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
  mkdir -p "$scratch/$target"
  seeds=()
  for dir in corpus regressions; do
    if [[ -d "$dir/$target" ]]; then seeds+=("$dir/$target"); fi
  done
  echo "fuzz: $target for ${time_each}s"
  if ! cargo fuzz run "${flags[@]}" "$target" "$scratch/$target" "${seeds[@]}" -- \
      -max_total_time="$time_each" -timeout=10 -rss_limit_mb=2048 -max_len=262144 \
      -print_final_stats=1 >"$scratch/$target.log" 2>&1; then
    tail -n 60 "$scratch/$target.log"
    echo "fuzz: $target FAILED (the input is under fuzz/artifacts/$target/)"
    exit 1
  fi
  grep -E '^stat::number_of_executed_units|^Done' "$scratch/$target.log" | tr '\n' ' '
  echo
done
echo "fuzz: ${#targets[@]} targets ran ${time_each}s each without a crash"
