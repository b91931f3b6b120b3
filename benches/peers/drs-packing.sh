#!/usr/bin/env bash
# Side-by-side packing: vinfra-drs pack() vs First-Fit-Decreasing vs OR-Tools CP-SAT vs
# the lower bound, on the same seeded instances of every generator family:
#   triplets       exact 3-VM fills (known optimum)
#   shrunk         the same, every VM 1 MHz / 1 MB smaller (same optimum, no exact fit)
#   scaled         the same, every VM scaled by its own factor in [0.97, 1] (same optimum)
#   quintuplets    exact 5-VM fills (known optimum)
#   heterogeneous  hosts of 1x, 1.5x, 2x, each filled by 3 VMs (known optimum)
#   random_5_25, random_10_60, random_25_50
#                  CPU and memory uniform in that percent range of a host (optimum unknown)
#   rule_heavy     triplets with affinity, anti-affinity and must-run-on rules
#
# usage: benches/peers/drs-packing.sh [--quick] [--seeds N] [--long-seeds N] [--cache DIR]
#   CP-SAT (2 workers) runs 10 s on every instance up to 501 VMs for seeds 1..N (default
#   3), and 60 s on those of 249 and 501 VMs for seeds 1..M (--long-seeds, default 1);
#   --quick: 1 seed, no 60 s runs.
#   9,999-VM instances: ours and FFD only (the CP-SAT model is too large to build).
#   --cache DIR keeps CP-SAT's answers (instances are seeded, so they do not change):
#   a rerun after a change to drs only reruns drs.
# Needs: cargo, python3; installs the Python package ortools with pip if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

seeds=3
long_seeds=1
cache=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) seeds=1; long_seeds=0 ;;
        --seeds) seeds="$2"; shift ;;
        --long-seeds) long_seeds="$2"; shift ;;
        --cache) cache="$2"; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

if ! python3 -c 'import ortools' 2>/dev/null; then
    echo "ortools missing: installing it with pip install ortools" >&2
    pip install -q ortools >&2
fi
cargo build --release -q -p vinfra-benches --bin drs-bench
bin="${CARGO_TARGET_DIR:-target}/release/drs-bench"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -n "$cache" ] || cache="$work/cache"
mkdir -p "$cache"
results="$work/results.jsonl"

cpsat() { # spec family vms seed limit -> JSON line (cached)
    local out="$cache/$2-$3-$4-$5.json"
    if [ ! -s "$out" ]; then
        python3 benches/peers/drs_cpsat.py "$1" "$5" 2 > "$out.tmp" && mv "$out.tmp" "$out"
    fi
    cat "$out"
}

run() { # family vms seed
    local spec="$work/$1-$2-$3.json"
    local ours p10='{}' p60='{}'
    ours=$("$bin" packing "$1" "$2" "$3" "$spec")
    if [ "$2" -le 501 ]; then
        p10=$(cpsat "$spec" "$1" "$2" "$3" 10)
        if [ "$3" -le "$long_seeds" ] && [ "$2" -ge 249 ]; then
            p60=$(cpsat "$spec" "$1" "$2" "$3" 60)
        fi
    fi
    echo "{\"ours\": $ours, \"cpsat10\": $p10, \"cpsat60\": $p60}" >> "$results"
    echo "$1 vms=$2 seed=$3: $ours" >&2
}

families="triplets shrunk scaled quintuplets heterogeneous random_5_25 random_10_60 random_25_50 rule_heavy"
for seed in $(seq 1 "$seeds"); do
    for family in $families; do
        for vms in 60 120 249 501 9999; do
            run "$family" "$vms" "$seed"
        done
    done
done

python3 benches/peers/drs_packing_report.py "$results"
