#!/usr/bin/env python3
"""Summarises drs-packing.sh's results: one row per family and size (sums over seeds)
with hosts vs the lower bound, vs First-Fit-Decreasing and vs CP-SAT 10 s / 60 s, then
the goals of issue 12 as counts.

usage: drs_packing_report.py RESULTS.jsonl
"""
import json
import sys
from collections import defaultdict


def main():
    rows = [json.loads(l) for l in open(sys.argv[1])]
    groups = defaultdict(list)
    for r in rows:
        o = r["ours"]
        groups[(o["family"], o["vms"])].append(r)
    print("| family | VMs | seeds | lower bound | optimum | ours | ours vs LB | FFD | CP-SAT 10 s | CP-SAT 60 s (seed 1) | ours ms (max) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    never_worse_ffd = [0, 0]
    vs_cpsat10 = defaultdict(lambda: [0, 0, 0])
    vs_opt = defaultdict(list)
    slowest = defaultdict(float)
    for (family, vms), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        ours = [r["ours"] for r in rs]
        placed = all(o["ours_unplaced"] == 0 for o in ours)
        lb = sum(o["lower_bound"] for o in ours)
        opt = sum(o["optimum"] for o in ours) if all(o["optimum"] for o in ours) else None
        hosts = sum(o["ours_hosts"] for o in ours)
        ffd_failed = sum(o["ffd_unplaced"] for o in ours)
        ffd = sum(o["ffd_hosts"] for o in ours)
        ms = max(o["ours_ms"] for o in ours)
        slowest[family] = max(slowest[family], ms)

        def peer(key):
            # CP-SAT's hosts summed over the seeds it solved, ours over the same seeds.
            ran = [r for r in rs if r[key]]
            if not ran:
                return "-"
            solved = [r for r in ran if r[key].get("hosts_used") is not None]
            if not solved:
                return f"no solution ({len(ran)} runs)"
            theirs = sum(r[key]["hosts_used"] for r in solved)
            mine = sum(r["ours"]["ours_hosts"] for r in solved)
            note = f", {len(ran) - len(solved)} of {len(ran)} without a solution" if len(solved) < len(ran) else ""
            return f"{theirs} (ours {mine}{note})"

        for o in ours:
            if o["ffd_unplaced"] == 0 and o["ours_unplaced"] == 0:
                never_worse_ffd[0] += o["ours_hosts"] <= o["ffd_hosts"]
                never_worse_ffd[1] += 1
            if opt:
                vs_opt[family].append((o["ours_hosts"] - o["optimum"]) / o["optimum"])
        for r in rs:
            p = r["cpsat10"].get("hosts_used") if r["cpsat10"] else None
            if r["cpsat10"] and family.startswith("random"):
                vs_cpsat10[family][1] += 1
                vs_cpsat10[family][0] += p is None or r["ours"]["ours_hosts"] <= p
                vs_cpsat10[family][2] += p is None
        ours_cell = str(hosts) if placed else f"{hosts} ({sum(o['ours_unplaced'] for o in ours)} unplaced)"
        ffd_cell = str(ffd) if ffd_failed == 0 else f"fails ({ffd_failed} unplaced)"
        print(f"| {family} | {vms} | {len(rs)} | {lb} | {opt if opt else '?'} | {ours_cell} | "
              f"+{100 * (hosts - lb) / lb:.1f}% | {ffd_cell} | {peer('cpsat10')} | {peer('cpsat60')} | {ms:.1f} |")
    print()
    print(f"ours <= FFD on {never_worse_ffd[0]}/{never_worse_ffd[1]} instances (where both place everything)")
    for family, (ok, n, none) in sorted(vs_cpsat10.items()):
        print(f"{family}: ours <= CP-SAT 10 s on {ok}/{n} instances up to 501 VMs ({none} where CP-SAT found no solution)")
    for family, gaps in sorted(vs_opt.items()):
        print(f"{family}: worst gap to the optimum {100 * max(gaps):.1f}%, mean {100 * sum(gaps) / len(gaps):.2f}%")
    for family, ms in sorted(slowest.items()):
        print(f"{family}: slowest pack {ms:.1f} ms")


if __name__ == "__main__":
    main()
