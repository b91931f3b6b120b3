#!/usr/bin/env bash
# The reference host's own costs (issue 13), measured on a real `vinfra-lab` cluster of
# release binaries, against the bare VMM where there is one to compare with:
#   - idle host: RSS and CPU of a `vinfra-host run` process with no VM, over IDLE_S;
#   - per VM: RSS of a VM's `vinfra-vm` child under the host vs the same VM under a bare
#     `vinfra-vm run` (peer);
#   - start: from `POST /vms/NAME/start` to the guest's VINFRA-READY on the host's event
#     log, vs bare `vinfra-vm run` from spawn to VINFRA-READY on its console (peer);
#     medians of RUNS;
#   - maintenance: a host running 4 VMs of 64 MiB emptied by live migration (the task's
#     total time);
#   - clones: 10 linked clones of a template with a disk, made and started through the
#     API, until every guest printed VINFRA-READY.
# Last lines: `<metric>: ours=<v> peer=<v> ratio=<ours/peer>` (or `ours=<v>` alone).
#
# usage: benches/peers/host-overhead.sh   (as root for namespaces; RUNS=5 IDLE_S=10)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS="${RUNS:-5}"
IDLE_S="${IDLE_S:-10}"
peers_kit
log "building the release binaries"
(cd "$ROOT" && cargo build -q --release -p vinfra-host --bins)
BIN="$ROOT/target/release"

python3 - "$BIN" "$WORKLOAD_ELF" "$RUNS" "$IDLE_S" <<'PY'
import json, os, statistics, subprocess, sys, tempfile, time, urllib.request

bin_dir, kernel, runs, idle_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tick = os.sysconf("SC_CLK_TCK")
lab_dir = tempfile.mkdtemp(prefix="host-overhead-")
lab = os.path.join(lab_dir, "lab")


def sh(*a, **kw):
    return subprocess.run(a, check=True, capture_output=True, text=True, **kw).stdout


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick


sh(f"{bin_dir}/vinfra-lab", "--dir", lab, "up", "--hosts", "3", "--vms", "0")
try:
    rec = json.load(open(os.path.join(lab, "lab.json")))
    apis = [h["api"] for h in rec["hosts"]]
    pids = [h["pid"] for h in rec["hosts"]]
    key = open(os.path.join(lab, "cluster.key")).read().strip()
    # The API token: HKDF-SHA256 of the key, as vinfra does (asked of vinfra itself).
    env = dict(os.environ, VINFRA_KEY_FILE=os.path.join(lab, "cluster.key"))

    def api(host, method, path, body=None):
        import hashlib, hmac
        k = bytes.fromhex(key)
        prk = hmac.new(b"", k, hashlib.sha256).digest()
        okm = hmac.new(prk, b"vinfra host api v1" + b"\x01", hashlib.sha256).digest()
        req = urllib.request.Request(apis[host - 1] + "/api/v1" + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": "Bearer " + okm.hex(),
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read()
            return json.loads(text) if text else None

    def all_events(host):
        # The API answers at most 1000 events at a time.
        events, after = [], 0
        while True:
            page = api(host, "GET", f"/events?after={after}")
            if not page:
                return events
            events += page
            after = page[-1]["seq"]

    def wait_task(host, tid, limit=120):
        end = time.time() + limit
        while time.time() < end:
            t = api(host, "GET", f"/tasks/{tid}")
            if t["state"] != "running":
                return t
            time.sleep(0.05)
        raise SystemExit(f"task {tid} did not end")

    for h in (1, 2, 3):
        end = time.time() + 20
        while True:
            try:
                api(h, "GET", "/host")
                break
            except Exception:
                if time.time() > end:
                    raise
                time.sleep(0.2)

    # Idle host.
    time.sleep(2)
    c0 = cpu_s(pids[0])
    time.sleep(idle_s)
    idle_cpu = (cpu_s(pids[0]) - c0) / idle_s * 100
    idle_rss = rss_kb(pids[0]) / 1024
    print(f"idle host: RSS {idle_rss:.1f} MiB, CPU {idle_cpu:.2f} % of a core over {idle_s} s",
          file=sys.stderr)

    # Start to READY, through the API vs bare.
    api(1, "POST", "/vms", {"name": "b", "kernel": kernel, "memory_mib": 16,
                             "cmdline": "workload.mib=1"})
    ours, peer, vm_rss = [], [], []
    seq = 0
    for r in range(runs):
        events = all_events(1)
        seq = events[-1]["seq"] if events else seq
        t0 = time.time()
        started = api(1, "POST", "/vms/b/start", {})
        ready = None
        while ready is None and time.time() < t0 + 20:
            for e in api(1, "GET", f"/events?after={seq}&limit=4096"):
                seq = e["seq"]
                if e["event"] == "console" and e["data"].get("vm") == "b" \
                        and "VINFRA-READY" in e["data"].get("line", ""):
                    ready = time.time()
            time.sleep(0.002)
        ours.append((ready - t0) * 1000)
        wait_task(1, started["task"])
        time.sleep(0.5)
        pid = api(1, "GET", "/vms/b")
        child = [e for e in all_events(1)
                 if e["event"] == "vm_started" and e["data"].get("vm") == "b"][-1]["data"]["pid"]
        vm_rss.append(rss_kb(child) / 1024)
        wait_task(1, api(1, "POST", "/vms/b/stop", {})["task"])
        # Bare vinfra-vm.
        t0 = time.time()
        p = subprocess.Popen([f"{bin_dir}/vinfra-vm", "run", "--kernel", kernel, "--memory-mib",
                              "16", "--cmdline", "workload.mib=1"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for line in p.stdout:
            if b"VINFRA-READY" in line:
                peer.append((time.time() - t0) * 1000)
                break
        time.sleep(0.5)
        bare_rss = rss_kb(p.pid) / 1024
        p.stdin.write(b"exit 0\n")
        p.stdin.flush()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    print(f"start to READY ms: ours {sorted(ours)} bare {sorted(peer)}", file=sys.stderr)

    # 10 linked clones of a template with a disk, booted (on host 2).
    api(2, "POST", "/vms", {"name": "tpl", "kernel": kernel, "memory_mib": 16,
                             "cmdline": "workload.mib=1", "disks": [{"size_mib": 8}]})
    events = all_events(2)
    seq = events[-1]["seq"] if events else 0
    t0 = time.time()
    for i in range(10):
        t = wait_task(2, api(2, "POST", "/vms/tpl/clone", {"name": f"c{i}", "full": False})["task"])
        if t["state"] != "success":
            raise SystemExit(f"clone failed: {t}")
    for i in range(10):
        wait_task(2, api(2, "POST", f"/vms/c{i}/start", {})["task"])
    ready = set()
    while len(ready) < 10 and time.time() < t0 + 60:
        for e in api(2, "GET", f"/events?after={seq}&limit=4096"):
            seq = e["seq"]
            if e["event"] == "console" and "VINFRA-READY" in e["data"].get("line", ""):
                ready.add(e["data"]["vm"])
        time.sleep(0.005)
    clones_ms = (time.time() - t0) * 1000
    if len(ready) < 10:
        raise SystemExit(f"only {sorted(ready)} booted")
    for i in range(10):
        wait_task(2, api(2, "POST", f"/vms/c{i}/stop", {})["task"])

    # Maintenance: 4 VMs of 64 MiB on host 1, emptied.
    for i in range(4):
        api(1, "POST", "/vms", {"name": f"m{i}", "kernel": kernel, "memory_mib": 64,
                                 "cmdline": "workload.mib=32"})
        wait_task(1, api(1, "POST", f"/vms/m{i}/start", {})["task"])
    time.sleep(3)
    t = wait_task(1, api(1, "POST", "/host/maintenance", {"enter": True})["task"], 300)
    if t["state"] != "success":
        raise SystemExit(f"maintenance failed: {t}")
    maint_ms = t["result"]["total_ms"]

    med = statistics.median
    print(f"idle_host_rss_mib: ours={idle_rss:.1f}")
    print(f"idle_host_cpu_pct: ours={idle_cpu:.2f}")
    print(f"vm_process_rss_mib: ours={med(vm_rss):.1f} peer={bare_rss:.1f} "
          f"ratio={med(vm_rss) / bare_rss:.2f}")
    print(f"start_to_ready_ms: ours={med(ours):.1f} peer={med(peer):.1f} "
          f"ratio={med(ours) / med(peer):.2f}")
    print(f"maintenance_4x64mib_ms: ours={maint_ms}")
    print(f"linked_clone_and_boot_10_ms: ours={clones_ms:.0f}")
finally:
    subprocess.run([f"{bin_dir}/vinfra-lab", "--dir", lab, "down"], capture_output=True)
PY
