#!/usr/bin/env bash
# Side-by-side packing: vinfra-drs pack() vs First-Fit-Decreasing vs OR-Tools CP-SAT on
# the same seeded instances (triplet instances with a known optimum host count, and
# rule-heavy instances with exactly the optimum number of hosts).
#
# usage: benches/peers/drs-packing.sh [--quick] [--seeds N] [--limit S]
#   default: CP-SAT limit 60 s, 3 seeds; --quick: 10 s, 1 seed.
# Needs: cargo, python3; installs the Python package ortools with pip if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

limit=60
seeds=3
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) limit=10; seeds=1 ;;
        --seeds) seeds="$2"; shift ;;
        --limit) limit="$2"; shift ;;
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
results="$work/results.jsonl"

run() { # family vms seed
    local spec="$work/$1-$2-$3.json"
    local ours peer
    ours=$("$bin" packing "$1" "$2" "$3" "$spec")
    peer=$(python3 benches/peers/drs_cpsat.py "$spec" "$limit" 2)
    echo "{\"ours\": $ours, \"peer\": $peer}" >> "$results"
    echo "$1 vms=$2 seed=$3: $ours" >&2
    echo "    cp-sat: $peer" >&2
}

for seed in $(seq 1 "$seeds"); do
    for vms in 60 120 249 501 9999; do
        run triplets "$vms" "$seed"
    done
    run rule_heavy 120 "$seed"
    run rule_heavy 501 "$seed"
done

python3 - "$results" "$limit" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
limit = float(sys.argv[2])
def fmt(v):
    return "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
print()
print(f"{'family':10} {'vms':>5} {'seed':>4} {'opt':>5} {'ours':>5} {'ours ms':>8} {'ffd':>5} {'cp-sat':>6} {'cp-sat status':>14}")
for r in rows:
    o, p = r["ours"], r["peer"]
    ffd = o["ffd_hosts"] if o["ffd_unplaced"] == 0 else f"fail({o['ffd_unplaced']})"
    print(f"{o['family']:10} {o['vms']:>5} {o['seed']:>4} {o['optimum']:>5} {o['ours_hosts']:>5} {o['ours_ms']:>8.1f} {ffd!s:>5} {fmt(p.get('hosts_used')):>6} {p['status']:>14}")
tri = [r for r in rows if r["ours"]["family"] == "triplets"]
opt_hits = sum(r["ours"]["ours_hosts"] == r["ours"]["optimum"] and r["ours"]["ours_unplaced"] == 0 for r in tri)
print(f"\nours optimal on {opt_hits}/{len(tri)} triplet instances; CP-SAT limit {limit:g} s, 2 workers")
metrics = []
for vms in sorted({r["ours"]["vms"] for r in tri}):
    rs = [r for r in tri if r["ours"]["vms"] == vms]
    ours = sum(r["ours"]["ours_hosts"] for r in rs)
    ffd = sum(r["ours"]["ffd_hosts"] for r in rs)
    opt = sum(r["ours"]["optimum"] for r in rs)
    print(f"ffd_hosts_{vms}: ffd={ffd} optimum={opt} ffd_over_optimum={ffd/opt:.3f}")
    if all("hosts_used" in r["peer"] for r in rs):
        peer = sum(r["peer"]["hosts_used"] for r in rs)
        metrics.append(f"hosts_used_{vms}: ours={ours} peer={peer} ratio={ours/peer:.3f}")
    else:
        print(f"hosts_used_{vms}: CP-SAT gave no figure ({rs[0]['peer'].get('note', rs[0]['peer']['status'])}); ours={ours} optimum={opt}")
rh = [r for r in rows if r["ours"]["family"] == "rule_heavy"]
placed_ours = sum(r["ours"]["ours_unplaced"] == 0 for r in rh)
placed_ffd = sum(r["ours"]["ffd_unplaced"] == 0 for r in rh)
placed_peer = sum("hosts_used" in r["peer"] for r in rh)
print(f"rule-heavy instances fully placed: ours {placed_ours}/{len(rh)}, FFD {placed_ffd}/{len(rh)}, CP-SAT {placed_peer}/{len(rh)}")
ms = max(r["ours"]["ours_ms"] for r in tri)
tot_o = sum(r["ours"]["ours_hosts"] for r in tri if "hosts_used" in r["peer"])
tot_p = sum(r["peer"]["hosts_used"] for r in tri if "hosts_used" in r["peer"])
for m in metrics:
    print(m)
print(f"rule_heavy_feasible: ours={placed_ours} peer={placed_peer} ratio={'n/a' if placed_peer == 0 else f'{placed_ours/placed_peer:.3f}'}")
print(f"pack_time_ms_max: ours={ms:.1f} peer={limit*1000:.0f} ratio={ms/(limit*1000):.4f}")
print(f"hosts_used_total: ours={tot_o} peer={tot_p} ratio={tot_o/max(tot_p,1):.3f}")
PY
