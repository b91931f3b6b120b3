#!/usr/bin/env python3
"""OR-Tools CP-SAT peer for vinfra-drs packing.

Reads a vinfra-drs cluster JSON (the same file drs-bench wrote for our run), builds the
assignment model (x[vm][host] booleans, host-used booleans, capacity per resource,
affinity, anti-affinity and must-run-on / must-not-run-on rules), minimises the hosts
used under a time limit and prints one JSON line.

usage: drs_cpsat.py SPEC.json TIME_LIMIT_S [WORKERS]
"""
import json
import sys
import time

from ortools.sat.python import cp_model

MAX_LITERALS = 5_000_000


def main():
    path, limit = sys.argv[1], float(sys.argv[2])
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    spec = json.load(open(path))
    hosts = [h for h in spec["hosts"]
             if not h.get("maintenance", False) and h.get("power", "on") == "on"]
    vms = [v for v in spec["vms"] if v.get("powered_on", True)]
    n, m = len(vms), len(hosts)
    out = {"vms": n, "hosts_available": m, "time_limit_s": limit}
    if n * m > MAX_LITERALS:
        out.update(status="skipped", note=f"model of {n}x{m} literals too large to build in time")
        print(json.dumps(out))
        return

    def footprint(v):
        c = max(v.get("cpu_demand_mhz") or v["cpu_mhz"], v.get("cpu", {}).get("reservation", 0))
        mm = max(v.get("mem_demand_mb") or v["mem_mb"], v.get("mem", {}).get("reservation", 0))
        return c, mm

    t0 = time.time()
    sizes = [footprint(v) for v in vms]
    if not spec.get("rules") and len({(h["cpu_mhz"], h["mem_mb"]) for h in hosts}) == 1:
        # No packing needs more hosts than First-Fit-Decreasing uses: the model gets only
        # those (the generators give every instance hosts to spare).
        cap = hosts[0]
        bins = []
        for i in sorted(range(n), key=lambda i: -(sizes[i][0] / cap["cpu_mhz"] + sizes[i][1] / cap["mem_mb"])):
            for u in bins:
                if u[0] + sizes[i][0] <= cap["cpu_mhz"] and u[1] + sizes[i][1] <= cap["mem_mb"]:
                    break
            else:
                u = [0, 0]
                bins.append(u)
            u[0] += sizes[i][0]
            u[1] += sizes[i][1]
        hosts = hosts[:len(bins)]
        m = len(hosts)
        out["hosts_in_model"] = m
    vidx = {v["id"]: i for i, v in enumerate(vms)}
    hidx = {h["id"]: j for j, h in enumerate(hosts)}
    model = cp_model.CpModel()
    x = [[model.NewBoolVar("") for _ in range(m)] for _ in range(n)]
    y = [model.NewBoolVar("") for _ in range(m)]
    for i in range(n):
        model.AddExactlyOne(x[i])
    for j, h in enumerate(hosts):
        model.Add(sum(sizes[i][0] * x[i][j] for i in range(n)) <= h["cpu_mhz"] * y[j])
        model.Add(sum(sizes[i][1] * x[i][j] for i in range(n)) <= h["mem_mb"] * y[j])
    rules = spec.get("rules", [])
    for r in rules:
        members = [vidx[v] for v in r["vms"] if v in vidx]
        if r["kind"] == "vm_affinity":
            for a, b in zip(members, members[1:]):
                for j in range(m):
                    model.Add(x[a][j] == x[b][j])
        elif r["kind"] == "vm_anti_affinity":
            for j in range(m):
                model.AddAtMostOne(x[i][j] for i in members)
        elif r["kind"] == "vm_host" and r["mode"] in ("must_run_on", "must_not_run_on"):
            inside = {hidx[h] for h in r["hosts"] if h in hidx}
            for i in members:
                for j in range(m):
                    if (j in inside) != (r["mode"] == "must_run_on"):
                        model.Add(x[i][j] == 0)
    same = len({(h["cpu_mhz"], h["mem_mb"]) for h in hosts}) == 1
    if not rules and same:
        # Identical hosts and no rules: break symmetry (used hosts first; the k-th
        # largest VM goes to one of the first k hosts).
        for j in range(m - 1):
            model.Add(y[j] >= y[j + 1])
        order = sorted(range(n), key=lambda i: -(sizes[i][0] / hosts[0]["cpu_mhz"] + sizes[i][1] / hosts[0]["mem_mb"]))
        for k, i in enumerate(order):
            for j in range(k + 1, m):
                model.Add(x[i][j] == 0)
        # Start from First-Fit-Decreasing (it satisfies the symmetry breaking above), so
        # CP-SAT always has a solution to improve on.
        used = []
        for i in order:
            for j, u in enumerate(used):
                if u[0] + sizes[i][0] <= hosts[j]["cpu_mhz"] and u[1] + sizes[i][1] <= hosts[j]["mem_mb"]:
                    break
            else:
                j = len(used)
                used.append([0, 0])
            used[j][0] += sizes[i][0]
            used[j][1] += sizes[i][1]
            if j < m:
                for jj in range(m):
                    model.AddHint(x[i][jj], jj == j)
        for j in range(m):
            model.AddHint(y[j], j < len(used))
    lb = max(-(-sum(s[0] for s in sizes) // hosts[0]["cpu_mhz"]), -(-sum(s[1] for s in sizes) // hosts[0]["mem_mb"])) if same else 0
    model.Add(sum(y) >= lb)
    model.Minimize(sum(y))
    build_s = time.time() - t0
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = limit
    solver.parameters.num_workers = workers
    status = solver.Solve(model)
    out.update(status=solver.StatusName(status), build_s=round(build_s, 3), solve_s=round(solver.WallTime(), 3))
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        out["hosts_used"] = int(round(solver.ObjectiveValue()))
        out["bound"] = int(round(solver.BestObjectiveBound()))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
