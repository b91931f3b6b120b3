#!/usr/bin/env bash
# Load balancing on perturbed placements whose best imbalance is known: a balanced
# placement from which N random migrations onto a tenth of the hosts were made. Undoing
# them (the witness) reaches the placement's imbalance, so N migrations is the reference
# ("peer"). Two families:
#   one-group   every host at 60 %: witness imbalance 0
#   two-groups  two CPU-compatibility groups at 60 % and 40 %, migrations inside the
#               first: witness imbalance 0.1, and the most and least loaded hosts are
#               never compatible (the stall of issue 12)
# We report, per threshold (targets as published: (5 - t) x 0.1 / sqrt(hosts)), the final
# imbalance against the target and against the witness, the migrations against the
# witness's, and the pass time at 96 hosts / 10,000 VMs against the 200 ms goal.
#
# The comparison for time is the straightforward greedy (every VM on every host, the
# imbalance recomputed from scratch per candidate): it is run for 3 moves and its time per
# move is multiplied by the number of moves our pass made (an estimate, stated as such).
#
# usage: benches/peers/drs-balance.sh [--seeds N]
set -euo pipefail
cd "$(dirname "$0")/../.."
seeds=3
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) seeds="$2"; shift ;;
        --quick) seeds=1 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
cargo build --release -q -p vinfra-benches --bin drs-bench
bin="${CARGO_TARGET_DIR:-target}/release/drs-bench"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for seed in $(seq 1 "$seeds"); do
    for family in one-group two-groups; do
        for shape in "16 800 60" "64 8000 400" "96 10000 500" "96 10000 1000"; do
            set -- $shape
            for t in 3 4 5; do
                "$bin" balance "$1" "$2" "$3" "$seed" "$t" "$family" | tee -a "$results" >&2
            done
        done
    done
done
naive=$("$bin" balance-naive 96 10000 500 1 5 3)
echo "$naive" >&2
python3 - "$results" "$naive" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print()
print("| family | hosts / VMs | threshold | target | witness imbalance | imbalance before -> after | migrations (witness) | pass ms (max) |")
print("|---|---|---|---|---|---|---|---|")
groups = {}
for r in rows:
    groups.setdefault((r["family"], r["hosts"], r["vms"], r["perturbation_moves"] > 520, r["threshold"]), []).append(r)
for (family, hosts, vms, _, t), rs in sorted(groups.items()):
    before = sum(r["imbalance_before"] for r in rs) / len(rs)
    after = max(r["imbalance_after"] for r in rs)
    moves = "/".join(str(r["migrations"]) for r in rs)
    witness = "/".join(str(r["perturbation_moves"]) for r in rs)
    ms = max(r["pass_ms"] for r in rs)
    print(f"| {family} | {hosts} / {vms:,} | {t} | {rs[0]['target']:.4f} | {rs[0]['witness_imbalance']:.3f} | {before:.3f} -> {after:.4f} (max) | {moves} ({witness}) | {ms:.1f} |")
# The goal: at a threshold, the target is reached wherever the witness is below it.
reachable = [r for r in rows if r["witness_imbalance"] < r["target"]]
reached = sum(r["imbalance_after"] <= r["target"] for r in reachable)
best = [r for r in rows if r["witness_imbalance"] >= r["target"]]
near = sum(r["imbalance_after"] <= r["witness_imbalance"] + 0.002 for r in best)
default = [r for r in rows if r["threshold"] == 3]
within = sum(r["migrations"] <= r["perturbation_moves"] for r in default)
within_all = sum(r["migrations"] <= r["perturbation_moves"] for r in rows)
print(f"\ntarget reached in {reached}/{len(reachable)} runs whose witness is below the target")
print(f"within 0.002 of the witness imbalance in {near}/{len(best)} runs whose witness is at or above the target")
print(f"migrations <= witness in {within}/{len(default)} runs at the default threshold 3, {within_all}/{len(rows)} at all thresholds")
moves = sum(r["migrations"] for r in rows)
pert = sum(r["perturbation_moves"] for r in rows)
big = [r for r in rows if r["hosts"] == 96 and r["vms"] == 10000]
print(f"slowest pass at 96 hosts / 10,000 VMs: {max(r['pass_ms'] for r in big):.1f} ms (one-group {max(r['pass_ms'] for r in big if r['family'] == 'one-group'):.1f} ms)")
ms = max(r["pass_ms"] for r in big)
naive = json.loads(sys.argv[2])
ref = [r for r in big if r["seed"] == 1 and r["threshold"] == 5 and r["perturbation_moves"] <= 500 and r["family"] == "one-group"][0]
est = naive["naive_ms_per_move"] * ref["migrations"]
print(f"naive greedy: {naive['naive_ms_per_move']:.0f} ms per move over {naive['naive_moves']} moves; our pass made {ref['migrations']} moves in {ref['pass_ms']:.1f} ms")
print("peers: migrations = the perturbation's migrations; pass_ms_96x10000_max = the 200 ms goal;")
print("       pass_ms_96x10000_vs_naive = naive greedy time per move x our move count (an estimate)")
print(f"migrations_total: ours={moves} peer={pert} ratio={moves/pert:.3f}")
print(f"pass_ms_96x10000_max: ours={ms:.1f} peer=200 ratio={ms/200:.3f}")
print(f"pass_ms_96x10000_vs_naive: ours={ref['pass_ms']:.1f} peer={est:.0f} ratio={ref['pass_ms']/est:.5f}")
PY
