#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a short time over its corpus and prints
# the coverage each reached. A crash, a panic or a timeout in any target fails the script
# and leaves the input under target/fuzz/artifacts/.
#
# Usage: scripts/fuzz.sh [seconds per target (default 30)] [target ...]
#   FUZZ_MERGE=1  afterwards, minimise what the run found into fuzz/corpus/<target>/
#                 (to refresh the committed corpus).
#
# No cargo-fuzz needed: the targets are built with the same coverage instrumentation
# cargo-fuzz passes to rustc (SanitizerCoverage: inline 8-bit counters, PC table, compare
# tracing), on the stable toolchain, without AddressSanitizer (Rust code here is safe code
# apart from vmm-core's KVM and mmap calls, which the targets do not reach).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SECONDS_EACH=${1:-30}
shift || true
# A target name given first would become libFuzzer's time limit (0: run forever).
if ! [[ $SECONDS_EACH =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: scripts/fuzz.sh [seconds per target] [target ...] (got '$SECONDS_EACH')" >&2
    exit 2
fi
TRIPLE=x86_64-unknown-linux-gnu
OUT=$ROOT/target/fuzz
export CARGO_TARGET_DIR=$OUT/build

mapfile -t ALL < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^vinfra-fuzz$')
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=("${ALL[@]}")

# --target keeps the instrumentation off build scripts and proc macros.
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
RUSTC_BOOTSTRAP=1 cargo build -q --release --manifest-path fuzz/Cargo.toml \
    --target "$TRIPLE" --bins

mkdir -p "$OUT/artifacts"
failed=()
for t in "${TARGETS[@]}"; do
    bin=$CARGO_TARGET_DIR/$TRIPLE/release/$t
    seeds=$ROOT/fuzz/corpus/$t
    work=$OUT/corpus/$t
    mkdir -p "$seeds" "$work"
    log=$OUT/$t.log
    # New inputs go to $work; the committed corpus is read only.
    if "$bin" -max_total_time="$SECONDS_EACH" -seed=1 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$OUT/artifacts/$t-" \
        "$work" "$seeds" >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed+=("$t")
        tail -n 30 "$log"
    fi
    line=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$line")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$line")
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    printf 'fuzz %-24s %-6s cov=%s ft=%s runs=%s (%ss, log %s)\n' \
        "$t" "$status" "${cov:-?}" "${ft:-?}" "${runs:-?}" "$SECONDS_EACH" "${log#"$ROOT"/}"
    if [[ ${FUZZ_MERGE:-0} == 1 && $status == ok ]]; then
        "$bin" -merge=1 "$seeds" "$work" >"$OUT/$t.merge.log" 2>&1
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: failed: ${failed[*]} (inputs under ${OUT#"$ROOT"/}/artifacts/)" >&2
    exit 1
fi
